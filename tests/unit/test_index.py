"""Axis versions from index answers: a recorded PEP 691 answer for numpy (trimmed), and a
loopback server standing in for the index to prove the cache."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from matrix import index
from matrix.errors import ConfigError
from matrix.spec import Query
from tests.bounded import bounded as within

DATA = json.loads((Path(__file__).parent / "data" / "index-numpy.json").read_text())
JSON = "application/vnd.pypi.simple.v1+json"
BOUND_S = 20  # no answer of a loopback server takes this long: a hang fails the test


def bounded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return within(BOUND_S, fn, *args, **kwargs)


class Index:
    """A loopback HTTP server standing in for the index: `pages` maps a project's name to
    (status, Content-Type, body); the requests it got are in `asked` (path, Accept)."""

    def __init__(self, pages: dict[str, tuple[int, str, bytes]], credentials: str = "") -> None:
        self.pages = pages
        self.asked: list[tuple[str, str]] = []
        self.authorization: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.asked.append((self.path, self.headers.get("Accept", "")))
                outer.authorization.append(self.headers.get("Authorization", ""))
                name = self.path.strip("/").split("/")[-1]
                status, kind, body = outer.pages.get(name, (404, "text/plain", b"not found"))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        auth = f"{credentials}@" if credentials else ""
        self.url = f"http://{auth}127.0.0.1:{self.server.server_address[1]}/simple"

    def __enter__(self) -> Index:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_releases_and_yanked() -> None:
    releases = {str(r.version): r for r in index.parse_releases(DATA)}
    assert releases["2.4.0"].yanked and not releases["2.2.6"].yanked
    uploaded = releases["1.26.4"].uploaded
    assert uploaded is not None and uploaded.date() == dt.date(2024, 2, 5)
    assert list(releases) == sorted(releases, key=Version)


def test_latest_patch_per_minor_as_of_a_date() -> None:
    releases = index.parse_releases(DATA)
    q = Query(">=1.24,<3", "latest-patch-per-minor")
    assert index.pick(releases, q, dt.date(2025, 1, 1)) == ("1.24.4", "1.25.2", "1.26.4", "2.0.2", "2.1.3", "2.2.1")
    now = index.pick(releases, q)
    assert "2.4.0" not in now  # yanked, every file of it
    newest = max(r.version for r in releases if not r.yanked and not r.version.is_prerelease)
    assert now[-1] == str(newest)
    assert index.pick(releases, Query(">=2,<2.3", latest=2), dt.date(2025, 6, 1)) == ("2.2.5", "2.2.6")
    assert all("rc" not in v for v in index.pick(releases, Query(">=2.3,<3")))
    assert any("rc" in v for v in index.pick(releases, Query(">=2.3,<3", pre=True)))


def test_fetch_caches_the_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    with Index({"numpy": (200, JSON, json.dumps(DATA).encode())}) as served:
        first = bounded(index.fetch, "NumPy", served.url)
    assert [accept.split(",")[0] for _, accept in served.asked] == ["application/vnd.pypi.simple.v1+json"]
    assert index.fetch("numpy", served.url) == first  # the server is gone: this came from the cache
    with pytest.raises(index.IndexUnavailable):
        bounded(index.fetch, "numpy", served.url, ttl_s=0)


def test_specifier_axes_are_validated(make_spec) -> None:
    for axis, key in [("{spec: '>=1.24,<3', pick: newest}", "packages.numpy.pick"),
                      ("{spec: 'not a spec'}", "packages.numpy.spec"),
                      ("{pick: all}", "packages.numpy.spec"),
                      ("{spec: '>=1', latest: 0}", "packages.numpy.latest"),
                      ("{spec: '>=1', lattest: 2}", "packages.numpy.lattest")]:
        with pytest.raises(ConfigError) as info:
            make_spec(f"bases: {{b: {{python: '3.11'}}}}\npackages: {{numpy: {axis}}}\n")
        assert info.value.key == key
    s = make_spec("bases: {b: {python: '3.11'}}\npackages: {numpy: {spec: '>=1.24', pick: latest-patch-per-minor}}\n")
    assert s.queries == (("numpy", Query(">=1.24", "latest-patch-per-minor")),)


# Answers that are not an index: each is infra (exit 3), one line, credentials hidden, never kept.
NOT_AN_INDEX = {
    "sign-in page": (200, "text/html; charset=utf-8",
                     b"<html><body><h1>Sign in to the proxy</h1><form action='/login'><input name=u></form>"
                     b"<a href='/forgot'>Forgot your password?</a></body></html>"),
    "random bytes": (200, "application/octet-stream", bytes(range(256)) * 8),
    "malformed JSON": (200, JSON, b'{"meta": {"api-version": "1.1"}, "files": [{"filename": '),
    "files is a string": (200, JSON, b'{"meta": {"api-version": "1.1"}, "name": "numpy", "files": "numpy.whl"}'),
    "files of numbers": (200, JSON, b'{"name": "numpy", "files": [1, 2, 3]}'),
    "a JSON list": (200, JSON, b'[{"filename": "numpy-2.2.6.tar.gz"}]'),
    "no files": (200, "application/json", b'{"detail": "Authentication credentials were not provided."}'),
    "bad upload time": (200, JSON, json.dumps({"name": "numpy", "files": [
        {"filename": "numpy-2.2.6.tar.gz", "upload-time": "yesterday"}]}).encode()),
    "another project's page": (200, JSON, json.dumps(dict(DATA, name="scipy")).encode()),
    "a future API": (200, JSON, json.dumps(dict(DATA, meta={"api-version": "2.0"})).encode()),
    "HTML sent as JSON": (200, JSON, b"<html><body>Session expired</body></html>"),
    "plain text": (200, "text/plain", b"Service temporarily rerouted"),
}


@pytest.mark.parametrize("answer", list(NOT_AN_INDEX))
def test_an_answer_that_is_not_an_index_is_infra_and_never_kept(answer: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    with Index({"numpy": NOT_AN_INDEX[answer]}, credentials="user:s3cr%24t") as served:
        with pytest.raises(index.IndexUnusable) as info:
            bounded(index.fetch, "numpy", served.url)
        message = str(info.value)
        assert info.value.exit_code == 3
        assert "\n" not in message and "s3cr" not in message
        assert f"http://***@127.0.0.1:{served.server.server_address[1]}/simple/numpy/" in message
        assert served.authorization[-1].startswith("Basic ")  # the credentials went in a header
        assert not list(tmp_path.rglob("*.json")), "a bad answer was kept"
        # the index recovers: the next fetch asks it again and reads the good answer
        served.pages["numpy"] = (200, JSON, json.dumps(DATA).encode())
        assert bounded(index.fetch, "numpy", served.url) == index.parse_releases(DATA)
    assert len(served.asked) == 2


def test_a_pep503_html_page_is_an_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index that ignores the Accept header sends its HTML page: the file links are the releases."""
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    page = (b'<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.1"></head><body>'
            b'<h1>Links for numpy</h1>'
            b'<a href="../../files/numpy-1.26.4.tar.gz#sha256=00">numpy-1.26.4.tar.gz</a><br>'
            b'<a href="../../files/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl" '
            b'data-requires-python="&gt;=3.9">numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl</a><br>'
            b'<a href="../../files/numpy-2.4.0.tar.gz" data-yanked="">numpy-2.4.0.tar.gz</a><br>'
            b'<a href="../../files/numpy-2.2.6.tar.gz"></a><br>'  # no text: the file name from the link
            b'<a href="/help">help</a></body></html>')
    with Index({"numpy": (200, "text/html", page)}) as served:
        releases = bounded(index.fetch, "numpy", served.url)
    assert [(str(r.version), r.yanked, r.uploaded) for r in releases] == [
        ("1.26.4", False, None), ("2.2.6", False, None), ("2.4.0", True, None)]
    assert index.fetch("numpy", served.url) == releases  # kept: the server is gone


def test_a_server_that_does_not_speak_http_is_infra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"\x16\x03\x01 garbage, not a status line\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        with pytest.raises(index.IndexUnusable) as info:
            bounded(index.fetch, "numpy", f"http://127.0.0.1:{listener.getsockname()[1]}/simple")
    finally:
        listener.close()
    assert "did not answer in HTTP" in str(info.value)
    assert not list(tmp_path.rglob("*.json"))


def test_a_silent_or_unreachable_index_is_unavailable_within_a_bound(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    monkeypatch.setattr(index, "SOCKET_TIMEOUT_S", 1.0)
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never answers
    try:
        with pytest.raises(index.IndexUnavailable) as info:
            bounded(index.fetch, "numpy", f"http://127.0.0.1:{listener.getsockname()[1]}/simple")
        assert not isinstance(info.value, index.ProjectNotFound)
    finally:
        listener.close()
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(index.IndexUnavailable):
        bounded(index.fetch, "numpy", f"http://127.0.0.1:{port}/simple")


def test_http_errors_and_oversized_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    with Index({"numpy": (503, "text/html", b"<h1>down</h1>"), "big": (200, JSON, b" " * 5000)}) as served:
        with pytest.raises(index.IndexUnavailable) as info:
            bounded(index.fetch, "numpy", served.url)
        assert "HTTP 503" in str(info.value) and not isinstance(info.value, index.ProjectNotFound)
        with pytest.raises(index.ProjectNotFound):
            bounded(index.fetch, "nmupy", served.url)
        monkeypatch.setattr(index, "MAX_ANSWER_BYTES", 1000)
        with pytest.raises(index.IndexUnusable):
            bounded(index.fetch, "big", served.url)
    assert not list(tmp_path.rglob("*.json"))


def test_a_bad_answer_an_earlier_version_kept_is_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before answers were checked, a bad one was kept for 6 h: such a file is not read as releases."""
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    with Index({"numpy": (200, JSON, json.dumps(DATA).encode())}) as served:
        import hashlib

        kept = tmp_path / "index" / (hashlib.sha256(f"{served.url}/numpy/".encode()).hexdigest()[:24] + ".json")
        kept.parent.mkdir(parents=True)
        kept.write_text('{"files": "numpy.whl"}')
        assert bounded(index.fetch, "numpy", served.url) == index.parse_releases(DATA)
        assert len(served.asked) == 1
        assert json.loads(kept.read_text())["format"]  # replaced by the good answer


def test_a_specifier_axis_of_a_project_the_index_does_not_have(make_spec, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    with Index({}) as served:
        s = make_spec(f"bases: {{b: {{python: '3.11'}}}}\npackages: {{nmupy: {{spec: '>=1'}}}}\n"
                      f"install: {{index_url: '{served.url}', ca_bundle: none}}\n")
        with pytest.raises(ConfigError) as info:
            bounded(index.expand, s)
    assert info.value.key == "packages.nmupy" and "no project nmupy" in str(info.value)


# Pins that are not releases: checked against a recorded index page before anything runs.
def matrix(url: str, packages: str, extra: str = "", install: str = "") -> str:
    return (f"bases: {{b: {{python: '3.11'}}}}\npackages: {{{packages}}}\n"
            f"install: {{index_url: '{url}', ca_bundle: none{install}}}\n{extra}")


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path / "cache"))
    with Index({"numpy": (200, JSON, json.dumps(DATA).encode())}) as served:
        yield served


def test_a_pin_that_is_not_a_release_is_bad_input(make_spec, recorded: Index) -> None:
    s = make_spec(matrix(recorded.url, "numpy: ['1.26.4', '1.99.0', '2.2.6']"))
    with pytest.raises(ConfigError) as info:
        bounded(index.check_releases, s)
    assert info.value.exit_code == 2
    assert info.value.key == "packages.numpy[1]"
    assert "numpy 1.99.0 is not a release on the index; nearest: 1.26.4, 2.0.0" in str(info.value)
    assert str(s.path) in str(info.value)
    good = make_spec(matrix(recorded.url, "numpy: ['1.26.4', '2.2.6', '2.2']"))  # 2.2 == 2.2.0
    assert bounded(index.check_releases, good) == []
    assert len(recorded.asked) == 1  # one answer per project, kept as the specifier axes' are


def test_include_pins_and_every_bad_pin_are_named(make_spec, recorded: Index) -> None:
    s = make_spec(matrix(recorded.url, "numpy: ['1.26.4']",
                         "include: [{base: b, numpy: '3.0.0'}, {base: b, numpy: '1.26.5'}]\n"))
    with pytest.raises(ConfigError) as info:
        bounded(index.check_releases, s)
    assert info.value.key == "include[0].numpy"
    assert "numpy 3.0.0 is not a release on the index; nearest: 2.5.5" in str(info.value)
    assert "include[1].numpy: numpy 1.26.5 is not a release on the index; nearest: 1.26.4, 2.0.0" in str(info.value)


def test_a_project_the_index_does_not_have(make_spec, recorded: Index) -> None:
    s = make_spec(matrix(recorded.url, "numpy: ['1.26.4'], nmupy: ['1.0']"))
    with pytest.raises(ConfigError) as info:
        bounded(index.check_releases, s)
    assert info.value.key == "packages.nmupy[0]" and "has no project 'nmupy'" in str(info.value)


def test_a_wheel_in_a_find_links_directory_counts_as_a_release(make_spec, recorded: Index, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "numpy-1.99.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    (wheels / "nmupy-1.0.tar.gz").write_bytes(b"")
    (wheels / "scipy-1.99.0+cpu-py3-none-any.whl").write_bytes(b"")
    s = make_spec(matrix(recorded.url, "numpy: ['1.99.0'], nmupy: ['1.0'], scipy: ['1.99.0']",
                         install=f", find_links: ['{wheels}']"))
    assert bounded(index.check_releases, s) == []
    # a pin with a local label takes only that label
    s = make_spec(matrix(recorded.url, "numpy: ['1.99.0+cu121']", install=f", find_links: ['{wheels}']"))
    with pytest.raises(ConfigError):
        bounded(index.check_releases, s)


def test_the_torch_wheel_in_pip_find_links_counts(make_spec, recorded: Index) -> None:
    """$PIP_FIND_LINKS on our machines holds a CPU torch wheel that PyPI may not have."""
    links = os.environ.get("PIP_FIND_LINKS", "")
    wheels = sorted(Path(links).glob("torch-*.whl")) if links and Path(links).is_dir() else []
    if not wheels:
        pytest.skip("no torch wheel in $PIP_FIND_LINKS here")
    version = wheels[0].name.split("-")[1]  # 2.13.0+cpu: ==2.13.0 takes it too
    for pin in {version, version.split("+")[0]}:
        s = make_spec(matrix(recorded.url, f"numpy: ['1.26.4'], torch: ['{pin}']",
                             install=", find_links: ['$PIP_FIND_LINKS']"))
        assert bounded(index.check_releases, s) == []


def test_an_index_that_cannot_be_read_is_a_note_and_the_run_goes_on(make_spec) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    s = make_spec(matrix(f"http://user:s3cret@127.0.0.1:{port}/simple", "numpy: ['1.99.0'], scipy: ['0.0.1']"))
    notes = bounded(index.check_releases, s)
    assert len(notes) == 1, notes  # the index is asked once: the other pins are not checked either
    assert notes[0].startswith("could not check the pins against the index: ") and notes[0].endswith("; going on")
    assert "s3cret" not in notes[0] and "***@" in notes[0]


def test_an_answer_that_is_not_an_index_stops_the_check_as_infra(make_spec, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path / "cache"))
    with Index({"numpy": NOT_AN_INDEX["sign-in page"]}) as served:
        s = make_spec(matrix(served.url, "numpy: ['1.26.4']"))
        with pytest.raises(index.IndexUnusable) as info:
            bounded(index.check_releases, s)
    assert info.value.exit_code == 3


def test_as_of_a_pin_uploaded_later_is_not_in_that_world(make_spec, recorded: Index) -> None:
    s = index.expand(make_spec(matrix(recorded.url, "numpy: ['1.26.4', '2.2.6']")), dt.date(2024, 6, 1))
    assert s.as_of == dt.date(2024, 6, 1)
    with pytest.raises(ConfigError) as info:
        bounded(index.check_releases, s)
    assert info.value.key == "packages.numpy[1]"
    assert "numpy 2.2.6 was uploaded on 2025-05-17, after --as-of 2024-06-01" in str(info.value)
    assert "nearest as of then: 1.26.4" in str(info.value)
    ok = index.expand(make_spec(matrix(recorded.url, "numpy: ['1.26.4']")), dt.date(2024, 6, 1))
    assert bounded(index.check_releases, ok) == []


def test_yanked_pins_specifier_axes_and_other_sources(make_spec, recorded: Index) -> None:
    notes = bounded(index.check_releases, make_spec(matrix(recorded.url, "numpy: ['2.4.0']")))
    assert len(notes) == 1 and "yanked" in notes[0] and "packages.numpy[0]" in notes[0]
    # a specifier axis takes its versions from the index: nothing to check
    axis = index.expand(make_spec(matrix(recorded.url, "numpy: {spec: '>=2.2,<2.3'}")))
    assert bounded(index.check_releases, axis) == []
    # a version on an extra index counts
    extra_page = json.dumps({"name": "numpy", "files": [{"filename": "numpy-1.99.0.tar.gz"}]}).encode()
    with Index({"numpy": (200, JSON, extra_page)}) as extra:
        s = make_spec(matrix(recorded.url, "numpy: ['1.99.0']", install=f", extra_index_urls: ['{extra.url}']"))
        assert bounded(index.check_releases, s) == []
    # a remote find-links page is not read: what is not on the index may be there
    s = make_spec(matrix(recorded.url, "numpy: ['1.99.0']", install=", find_links: ['https://wheels.invalid/']"))
    notes = bounded(index.check_releases, s)
    assert len(notes) == 1 and "may hold it" in notes[0]


def test_an_axis_with_an_index_of_its_own_is_checked_there_first(make_spec, recorded: Index) -> None:
    # torch's CUDA builds: 2.4.1+cu121 is a release of its own index, not of the default one.
    page = json.dumps({"name": "numpy", "files": [{"filename": "numpy-1.99.0+cu121-cp311-cp311-linux_x86_64.whl"}]})
    with Index({"numpy": (200, JSON, page.encode())}) as own:
        s = make_spec(matrix(recorded.url, f"numpy: {{versions: ['1.99.0+cu121'], index_url: '{own.url}'}}"))
        assert s.sources == (("numpy", own.url),)
        assert bounded(index.check_releases, s) == []
        assert own.asked  # its own index was read
    with pytest.raises(ConfigError) as info:  # without that index it is no release
        bounded(index.check_releases, make_spec(matrix(recorded.url, "numpy: ['1.99.0+cu121']")))
    assert "not a release" in str(info.value)
