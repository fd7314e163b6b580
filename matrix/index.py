"""The releases a package index offers, and the versions an axis picks from them.

Reads the index's JSON simple API (PEP 691, with PEP 700 upload times), through the index the
matrix file configures and its CA bundle, and caches each answer for a few hours. Version logic
is packaging's, never string compares.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from matrix.errors import EXIT_INFRA, CompatMatrixError
from matrix.store import atomic_write

PYPI = "https://pypi.org/simple"
CACHE_TTL_S = 6 * 3600
PICKS = ("latest-patch-per-minor", "all")


class IndexUnavailable(CompatMatrixError):
    """The index could not be asked (network, HTTP error, not a PEP 691 answer)."""

    exit_code = EXIT_INFRA


@dataclass(frozen=True)
class Release:
    version: Version
    uploaded: dt.datetime | None
    yanked: bool


@dataclass(frozen=True)
class Query:
    """An axis given as a specifier: {spec: ">=1.24,<3", pick: latest-patch-per-minor, latest: 3}."""

    spec: str
    pick: str = "all"
    latest: int | None = None
    pre: bool = False


def parse_releases(data: dict[str, Any]) -> list[Release]:
    """Releases from a PEP 691 JSON answer: a release is yanked when all of its files are."""
    files: dict[Version, list[dict[str, Any]]] = {}
    for f in data.get("files", []):
        name = f.get("filename", "")
        try:
            version = parse_wheel_filename(name)[1] if name.endswith(".whl") else parse_sdist_filename(name)[1]
        except (ValueError, InvalidVersion):
            continue  # eggs, installers and other old formats
        files.setdefault(version, []).append(f)
    out = []
    for version, fs in files.items():
        times = [dt.datetime.fromisoformat(f["upload-time"].replace("Z", "+00:00"))
                 for f in fs if f.get("upload-time")]
        out.append(Release(version, min(times) if times else None, all(bool(f.get("yanked")) for f in fs)))
    return sorted(out, key=lambda r: r.version)


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
    from matrix.resultcache import cache_root  # here: resultcache → spec → index at import time

    return cache_root() / "index"


def fetch(name: str, index_url: str | None = None, ca_bundle: Path | None = None,
          ttl_s: float = CACHE_TTL_S) -> list[Release]:
    """The releases of `name` on the index, from the cache when fresh."""
    base = (index_url or PYPI).rstrip("/")
    url = f"{base}/{canonicalize_name(name)}/"
    cache = _cache_dir() / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".json")
    if cache.is_file() and time.time() - cache.stat().st_mtime < ttl_s:
        return parse_releases(json.loads(cache.read_text(encoding="utf-8")))
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": "application/vnd.pypi.simple.v1+json"}
    if parts.username:  # credentials go in a header, never in a URL that could be logged
        auth = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    import ssl  # here: only a fetch needs them, and every command imports this module
    from urllib import error as url_error
    from urllib import request as url_request

    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    try:
        with url_request.urlopen(url_request.Request(url, headers=headers), timeout=60,
                                    context=context) as answer:
            text = answer.read().decode("utf-8")
        data = json.loads(text)
    except (url_error.URLError, OSError, ValueError) as e:
        raise IndexUnavailable(f"asking {url} for the releases of {name}: {e}") from None
    if not isinstance(data, dict) or "files" not in data:
        raise IndexUnavailable(f"{url} did not answer with the JSON simple API (PEP 691)")
    atomic_write(cache, text)
    return parse_releases(data)
