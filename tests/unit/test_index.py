"""Axis versions from index answers: a recorded PEP 691 answer for numpy (trimmed), and a
loopback server standing in for the index to prove the cache."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from pathlib import Path

import pytest
from packaging.version import Version

from matrix import index
from matrix.errors import ConfigError
from matrix.index import Query

DATA = json.loads((Path(__file__).parent / "data" / "index-numpy.json").read_text())


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
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    body = json.dumps(DATA).encode()
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.headers.get("Accept", ""))
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    try:
        first = index.fetch("NumPy", url)
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["application/vnd.pypi.simple.v1+json"]
    assert index.fetch("numpy", url) == first  # the server is gone: this came from the cache
    with pytest.raises(index.IndexUnavailable):
        index.fetch("numpy", url, ttl_s=0)


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
