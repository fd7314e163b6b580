"""The releases a package index offers, the versions an axis picks from them, and whether a pin
is a release at all.

Reads the index's simple API: JSON (PEP 691, with PEP 700 upload times), or the HTML page
(PEP 503) an index that ignores the Accept header sends, through the index the matrix file
configures and its CA bundle. An answer is checked before anything is kept: one that is not an
index answer (a proxy's sign-in page, random bytes, JSON of another shape) is an infra failure
(IndexUnusable, exit 3) and is never cached; a good one is kept for a few hours as the releases
it lists. Version logic is packaging's, never string compares.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from matrix.errors import EXIT_INFRA, CompatMatrixError, ConfigError, IndexUnusable, redact
from matrix.paths import atomic_write, cache_root
from matrix.spec import Query, Spec, canonical_name

PYPI = "https://pypi.org/simple"
CACHE_TTL_S = 6 * 3600
# Bounds on one answer: a project page of PyPI's largest projects is a few MB.
MAX_ANSWER_BYTES = 64 << 20
READ_DEADLINE_S = 120.0
SOCKET_TIMEOUT_S = 30.0
_CACHE_FORMAT = "releases/1"
_DIST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
# JSON first; the HTML page as pip asks for it (what an index that has no JSON sends).
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01"

__all__ = ["IndexUnavailable", "IndexUnusable", "ProjectNotFound", "Query", "Release", "check_releases", "fetch",
           "parse_releases", "pick"]


class IndexUnavailable(CompatMatrixError):
    """The index could not be asked (network down, refused, timed out, an HTTP error)."""

    exit_code = EXIT_INFRA


class ProjectNotFound(IndexUnavailable):
    """The index answered that it has no project of that name (HTTP 404)."""


@dataclass(frozen=True)
class Release:
    version: Version
    uploaded: dt.datetime | None
    yanked: bool


def _file_version(filename: str) -> tuple[str, Version] | None:
    """(canonical project name, version) of a wheel or sdist file name; None for anything else
    (eggs, installers and other old formats). packaging.utils would import packaging.tags (11 ms
    on a re-run that only reads the kept releases and a find-links directory)."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):
            return None
        name, version = parts[0], parts[1]
    elif filename.endswith((".tar.gz", ".zip")):
        name, _, version = filename[: -7 if filename.endswith(".tar.gz") else -4].rpartition("-")
    else:
        return None
    if not _DIST_NAME.match(name):
        return None
    try:
        return canonical_name(name), Version(version)
    except InvalidVersion:
        return None


def _upload_time(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def parse_releases(data: dict[str, Any]) -> list[Release]:
    """Releases from a PEP 691 JSON answer (checked with `problem` first): a release is yanked
    when all of its files are."""
    files: dict[Version, list[dict[str, Any]]] = {}
    for f in data.get("files", []):
        found = _file_version(f.get("filename", ""))
        if found is not None:
            files.setdefault(found[1], []).append(f)
    out = []
    for version, fs in files.items():
        times = [_upload_time(f["upload-time"]) for f in fs if f.get("upload-time")]
        out.append(Release(version, min(times) if times else None, all(bool(f.get("yanked")) for f in fs)))
    return sorted(out, key=lambda r: r.version)


def problem(data: Any, name: str) -> str | None:
    """What makes `data` not a PEP 691 project answer for `name`; None when it is one."""
    if not isinstance(data, dict):
        return f"JSON {type(data).__name__}, not a project page"
    meta = data.get("meta")
    if meta is not None:
        version = meta.get("api-version") if isinstance(meta, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            return f"meta.api-version is {version!r}; this tool reads version 1 of the simple API"
    if "name" in data and (not isinstance(data["name"], str) or canonical_name(data["name"]) != canonical_name(name)):
        return f"the page of project {data['name']!r}, not of {name!r}"
    files = data.get("files")
    if not isinstance(files, list):
        return "no list of files" if files is None else f"'files' is {type(files).__name__}, not a list"
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("filename"), str) or not f["filename"]:
            return f"files[{i}] is not a file entry with a filename"
        when = f.get("upload-time")
        if when is not None:
            try:
                if not isinstance(when, str):
                    raise ValueError
                _upload_time(when)
            except ValueError:
                return f"files[{i}].upload-time {str(when)[:40]!r} is not a date and time"
        if not isinstance(f.get("yanked", False), (bool, str)):
            return f"files[{i}].yanked is neither true/false nor a reason"
    return None


def _from_html(text: str, name: str) -> dict[str, Any]:
    """A PEP 503 page as PEP 691 data; ValueError when no link on it is a file of the project."""
    import html.parser  # here: only an index that sends HTML needs it

    class Links(html.parser.HTMLParser):
        """The file links of a PEP 503 project page: (file name, yanked)."""

        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.files: list[tuple[str, bool]] = []
            self._href: str | None = None
            self._yanked = False
            self._text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "a":
                a = dict(attrs)
                self._href, self._yanked, self._text = a.get("href") or "", "data-yanked" in a, []

        def handle_data(self, data: str) -> None:
            if self._href is not None:
                self._text.append(data)

        def handle_endtag(self, tag: str) -> None:
            if tag == "a" and self._href is not None:
                text = "".join(self._text).strip()
                if not text:
                    text = urllib.parse.unquote(urllib.parse.urlsplit(self._href).path.rsplit("/", 1)[-1])
                self.files.append((text, self._yanked))
                self._href = None

    links = Links()
    links.feed(text)
    links.close()
    canon = canonical_name(name)
    files = [{"filename": f, "yanked": y} for f, y in links.files
             if (found := _file_version(f)) is not None and canonical_name(found[0]) == canon]
    if not files:
        raise ValueError(f"an HTML page with no file of {name} on it ({len(links.files)} other links): "
                         "a sign-in or error page?")
    return {"files": files}


def _read_answer(body: bytes, content_type: str, name: str) -> dict[str, Any]:
    """The answer's data, checked; ValueError saying what it is instead of an index answer."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{len(body)} bytes that are not UTF-8 text") from None
    kind = content_type.split(";")[0].strip().lower()
    start = text.lstrip()[:1]
    if "json" in kind or (not kind.endswith("html") and start in ("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"malformed JSON ({e})") from None
        bad = problem(data, name)
        if bad:
            raise ValueError(f"JSON that is not a simple-API project page: {bad}")
        return data
    if "html" in kind or start == "<":
        return _from_html(text, name)
    raise ValueError(f"neither JSON nor HTML (Content-Type {content_type or 'none'!r}, starting {text[:40]!r})")


def pick(releases: list[Release], query: Query, as_of: dt.date | None = None) -> tuple[str, ...]:
    """The versions an axis takes, oldest first. Yanked releases are skipped, and with `as_of`
    everything uploaded after that day, so a past sweep can be run again."""
    spec = SpecifierSet(query.spec)
    chosen = []
    for r in releases:
        if r.yanked or not spec.contains(r.version, prereleases=query.pre):
            continue
        if as_of is not None and (r.uploaded is None or r.uploaded.date() > as_of):
            continue
        chosen.append(r.version)
    if query.pick == "latest-patch-per-minor":
        newest: dict[tuple[int, int], Version] = {}
        for v in chosen:
            key = (v.major, v.minor)
            newest[key] = max(v, newest.get(key, v))
        chosen = sorted(newest.values())
    if query.latest is not None:
        chosen = chosen[-query.latest:]
    return tuple(str(v) for v in chosen)


def _cache_dir() -> Path:

    return cache_root() / "index"


def _redact(text: str) -> str:
    return redact(text)  # install.redact: URL credentials hidden


def _kept(cache: Path, ttl_s: float) -> list[Release] | None:
    """The releases kept from a good answer, while fresh; None otherwise (also for a file this
    version of the tool did not write: it is asked again)."""
    try:
        if time.time() - cache.stat().st_mtime >= ttl_s:
            return None
        data = json.loads(cache.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT:
            return None
        return [Release(Version(v), _upload_time(t) if t else None, bool(y)) for v, t, y in data["releases"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keep(cache: Path, releases: list[Release]) -> None:
    data = {"format": _CACHE_FORMAT,
            "releases": [[str(r.version), r.uploaded.isoformat() if r.uploaded else None, r.yanked] for r in releases]}
    try:
        atomic_write(cache, json.dumps(data))
    except OSError:
        pass  # a cache only: the next command asks again


@functools.lru_cache(maxsize=4)
def _tls(cafile: str | None) -> Any:
    """One TLS context per CA bundle (reading the bundle takes 45 ms; a context serves any thread)."""
    import ssl

    return ssl.create_default_context(cafile=cafile)


def _get(url: str, shown: str, name: str, headers: dict[str, str], ca_bundle: Path | None) -> tuple[bytes, str]:
    """The answer's body and Content-Type, bounded in size and time."""
    import http.client
    import ssl  # here: only a fetch needs them, and every command imports this module
    from urllib import error as url_error
    from urllib import request as url_request

    try:
        context = _tls(str(ca_bundle) if ca_bundle else None) if url.startswith("https:") else None
    except (OSError, ssl.SSLError) as e:
        raise IndexUnavailable(f"asking {shown} for the releases of {name}: the CA bundle {ca_bundle}: {e}") from None
    deadline = time.monotonic() + READ_DEADLINE_S
    try:
        with url_request.urlopen(url_request.Request(url, headers=headers), timeout=SOCKET_TIMEOUT_S,
                                    context=context) as answer:
            content_type = answer.headers.get("Content-Type", "") if answer.headers else ""
            read = getattr(answer, "read1", answer.read)
            chunks, size = [], 0
            while chunk := read(1 << 16):
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise IndexUnusable(f"{shown} answered with more than {MAX_ANSWER_BYTES >> 20} MB for the "
                                        f"releases of {name}: not a package index answer; nothing was kept")
                if time.monotonic() > deadline:
                    raise IndexUnavailable(f"asking {shown} for the releases of {name}: the answer took more "
                                           f"than {READ_DEADLINE_S:.0f} s")
                chunks.append(chunk)
        return b"".join(chunks), content_type
    except url_error.HTTPError as e:
        e.close()  # its body is not read
        if e.code in (404, 410):
            raise ProjectNotFound(f"{shown} has no project {name} (HTTP {e.code})") from None
        raise IndexUnavailable(f"asking {shown} for the releases of {name}: HTTP {e.code} {e.reason}") from None
    except (http.client.IncompleteRead, ConnectionError) as e:
        raise IndexUnavailable(f"asking {shown} for the releases of {name}: the connection broke ({e!r})") from None
    except http.client.HTTPException as e:
        raise IndexUnusable(f"{shown} did not answer in HTTP when asked for the releases of {name} ({e!r}); "
                            "check the index URL and any proxy in between") from None
    except (url_error.URLError, OSError, ValueError) as e:
        raise IndexUnavailable(f"asking {shown} for the releases of {name}: {getattr(e, 'reason', e)}") from None


def fetch(name: str, index_url: str | None = None, ca_bundle: Path | None = None,
          ttl_s: float = CACHE_TTL_S) -> list[Release]:
    """The releases of `name` on the index, from the cache when fresh.

    Raises IndexUnavailable when the index cannot be asked (ProjectNotFound: it has no such
    project), IndexUnusable when what answered is not an index. Only good answers are kept."""
    base = (index_url or PYPI).rstrip("/")
    url = f"{base}/{canonical_name(name)}/"
    shown = _redact(url)
    cache = _cache_dir() / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".json")
    kept = _kept(cache, ttl_s)
    if kept is not None:
        return kept
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": _ACCEPT}
    if parts.username:  # credentials go in a header, never in a URL that could be logged
        auth = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=(parts.hostname or "")
                                                      + (f":{parts.port}" if parts.port else "")))
    body, content_type = _get(url, shown, name, headers, ca_bundle)
    try:
        releases = parse_releases(_read_answer(body, content_type, name))
    except ValueError as e:
        raise IndexUnusable(_redact(f"{shown} answered the request for the releases of {name} with something "
                                    f"that is not a package index: {e}; nothing was kept (check the index URL "
                                    "and any proxy or sign-in page in between)")) from None
    _keep(cache, releases)
    return releases


def _local_versions(find_links: tuple[str, ...]) -> dict[str, set[Version]]:
    """Versions of each project with a wheel or sdist in the local find-links directories."""
    out: dict[str, set[Version]] = {}
    for link in find_links:
        if "://" in link:
            continue
        try:
            names = [p.name for p in Path(link).iterdir()]
        except OSError:
            continue
        for file in names:
            found = _file_version(file)
            if found is not None:
                out.setdefault(canonical_name(found[0]), set()).add(found[1])
    return out


def _matches(pin: Version, version: Version) -> bool:
    """Whether `==pin` takes `version`: a pin without a local label takes any (2.13.0 → 2.13.0+cpu)."""
    return version == pin or (not pin.local and version.local is not None and Version(version.public) == pin)


def _nearest(version: Version, releases: list[Version]) -> list[Version]:
    """The release just below and the one just above, final releases unless the pin is a
    pre-release (or there are no others)."""
    pool = [v for v in releases if not v.is_prerelease] if not version.is_prerelease else releases
    pool = sorted(set(pool or releases))
    below = [v for v in pool if v < version]
    above = [v for v in pool if v > version]
    return below[-1:] + above[:1]


def check_releases(spec: Spec) -> list[str]:
    """Check every exact pin of the expanded matrix (the `packages` axes and the `include` cells)
    against the releases on its indexes, before anything runs; returns notes to print.

    A version counts when an index lists it (uploaded by spec.as_of when that is set: uv installs
    nothing newer then) or a local find-links directory holds a file of it. A pin that is not a
    release raises ConfigError naming the file, the key and the nearest releases. An index that
    cannot be read leaves a note and the check goes on; an answer that is not an index raises
    IndexUnusable (exit 3). Index answers are cached as for the specifier axes."""
    queried = {name for name, _ in spec.queries}
    wanted: list[tuple[str, str, str]] = []  # (key, name, version)
    for name, versions in spec.packages:
        if name not in queried:  # a specifier axis takes its versions from the index
            wanted += [(f"packages.{name}[{i}]", name, v) for i, v in enumerate(versions)]
    for i, entry in enumerate(spec.include):
        wanted += [(f"include[{i}].{name}", name, v) for name, v in entry.pins]
    if not wanted:
        return []
    local = _local_versions(spec.install.find_links)
    remote_links = [link for link in spec.install.find_links if "://" in link]
    indexes = [spec.install.index_url or PYPI, *spec.install.extra_index_urls]
    where = "the index" if len(indexes) == 1 else "the indexes"
    notes: list[str] = []
    unreadable: set[str] = set()
    pages: dict[tuple[str, str], list[Release] | None] = {}  # None: no such project there

    def releases(name: str, index_url: str) -> list[Release] | None:
        k = (canonical_name(name), index_url)
        if k not in pages:
            try:
                pages[k] = fetch(name, index_url, spec.install.ca_bundle)
            except ProjectNotFound:
                pages[k] = None
        return pages[k]

    problems: list[tuple[str, str]] = []
    as_of = spec.as_of
    for key, name, text in wanted:
        version = Version(text)
        if any(_matches(version, v) for v in local.get(canonical_name(name), ())):
            continue
        listed: list[Release] = []
        projects = 0
        complete = True
        hit = None
        own = dict(spec.sources).get(name)
        for index_url in ([own] if own else []) + indexes:
            if index_url in unreadable:
                complete = False
                continue
            try:
                page = releases(name, index_url)
            except IndexUnusable:
                raise
            except IndexUnavailable as e:
                unreadable.add(index_url)
                complete = False
                notes.append(_redact(f"could not check the pins against the index: {e}; going on"))
                continue
            if page is None:
                continue
            projects += 1
            listed += page
            hit = next((r for r in page if _matches(version, r.version)), None)
            if hit is not None:
                break
        if hit is not None:
            late = as_of is not None and hit.uploaded is not None and hit.uploaded.date() > as_of
            if not late:
                if hit.yanked:
                    notes.append(f"{key}: {name} {text} is yanked on {where} (an exact pin still installs it)")
                continue
        if not complete:
            continue  # not seen where it could be checked: the notes say so
        if remote_links and hit is None:
            notes.append(_redact(f"{key}: {name} {text} is not on {where}; the find-links URL(s) "
                                 f"{', '.join(remote_links)} may hold it (not checked); going on"))
            continue
        if hit is not None:  # listed, but uploaded after --as-of
            then = [r.version for r in listed if not r.yanked and r.uploaded is not None
                    and r.uploaded.date() <= as_of]  # type: ignore[operator]
            near = ", ".join(str(v) for v in _nearest(version, then)) or "none"
            assert hit.uploaded is not None
            problems.append((key, f"{name} {text} was uploaded on {hit.uploaded.date()}, after --as-of {as_of} "
                                  f"(no install of the run sees it); nearest as of then: {near}"))
        elif not projects:
            problems.append((key, f"{name} {text} is not a release: {where} has no project "
                                  f"{canonical_name(name)!r}"))
        else:
            pool = [r.version for r in listed if not r.yanked] or [r.version for r in listed]
            if as_of is not None:
                pool = [r.version for r in listed if not r.yanked and r.uploaded is not None
                        and r.uploaded.date() <= as_of] or pool
            near = ", ".join(str(v) for v in _nearest(version, pool)) or "none"
            problems.append((key, f"{name} {text} is not a release on {where}; nearest: {near}"))
    if problems:
        key, first = problems[0]
        more = "".join(f"\n  {k}: {p}" for k, p in problems[1:])
        raise ConfigError(str(spec.path), key, first + more,
                          "pin a version the index offers (the nearest are named), or put its wheel in a "
                          "find-links directory")
    return notes


def expand(spec: Spec, as_of: dt.date | None = None) -> Spec:
    """Fill the axes given as specifiers from the package index (cached); others stay as written.
    The result carries `as_of`: the whole run's world is the index as of that day."""
    if not spec.queries:
        return spec if spec.as_of == as_of else dataclasses.replace(spec, as_of=as_of)
    queries = dict(spec.queries)
    packages = []
    for name, versions in spec.packages:
        if name in queries:
            q = queries[name]
            try:
                releases = fetch(name, spec.install.index_url, spec.install.ca_bundle)
            except ProjectNotFound as e:
                raise ConfigError(str(spec.path), f"packages.{name}", str(e),
                                  "check the package name (the index knows it by its distribution name)") from None
            versions = pick(releases, q, as_of)
            if not versions:
                when = f" as of {as_of}" if as_of else ""
                raise ConfigError(str(spec.path), f"packages.{name}.spec",
                                  f"{q.spec!r} picks no release of {name} on the index{when}",
                                  "widen the specifier (yanked releases never count)")
        packages.append((name, versions))
    return dataclasses.replace(spec, packages=tuple(packages), as_of=as_of)
