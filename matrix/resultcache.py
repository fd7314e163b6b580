"""Verdicts kept across runs on this machine, keyed by everything that can change a cell's outcome.

An unchanged re-run reads its verdicts from here instead of installing anything. The key holds
the tool's version, the backend, the base as it is now (image id / interpreter version), the
base's definition, the cell's pins and mode, the layered order, the install options (and the
wheels in local find-links directories), the installer (uv's binary), the limits, the probe scripts'
code, the registry's issue probes and the --as-of day: change any of them and the cell runs again. `--rerun`
ignores what is kept (and keeps the new verdicts). Infra-errors are never kept: they are no verdict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from matrix import __version__, install, probing
from matrix.cells import Cell, install_order
from matrix.paths import atomic_write, cache_root
from matrix.spec import Spec
from matrix.store import UNREADABLE, Outcome, Record


@lru_cache(maxsize=1)
def _probe_code() -> str:
    h = hashlib.sha256()
    for name, path in sorted(probing.probe_files().items()):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _installer() -> str:
    """The uv that installs (its file: a new uv can resolve or report differently)."""
    from uv import find_uv_bin

    path = Path(find_uv_bin())
    st = path.stat()
    return f"{path} {st.st_size} {st.st_mtime_ns}"


def _local_wheels(find_links: tuple[str, ...]) -> list[list[object]]:
    """Name, size and mtime of each wheel in local find-links directories: a wheel dropped in
    (or rebuilt) there can change what installs."""
    out: list[list[object]] = []
    for link in find_links:
        if "://" in link:
            continue
        for w in sorted(Path(link).glob("*.whl")):
            st = w.stat()
            out.append([w.name, st.st_size, int(st.st_mtime)])
    return out


class ResultCache:
    def __init__(self, spec: Spec, backend: str, issue_probes: tuple[tuple[str, str], ...] = (),
                 directory: Path | None = None) -> None:
        self.directory = directory or cache_root() / "results"
        install = asdict(spec.install)
        install["ca_bundle"] = None  # which CA vouches for the index does not change a verdict
        # Computed once per run: what every cell of this matrix shares.
        self._common = {
            "tool": __version__, "backend": backend, "installer": _installer(), "probes": _probe_code(),
            "issue_probes": [list(p) for p in issue_probes], "install": install,
            "local_wheels": _local_wheels(spec.install.find_links), "limits": asdict(spec.limits),
        }
        if spec.as_of is not None:  # another world than today's index (absent: keys of earlier runs hold)
            self._common["as_of"] = spec.as_of.isoformat()
        self.spec = spec

    def key(self, cell: Cell, base_id: str) -> str:
        base = self.spec.base(cell.base)
        parts = dict(self._common, base_id=base_id, base=asdict(base), mode=cell.mode,
                     pins=[list(p) for p in cell.pins], order=[n for n, _ in install_order(cell, self.spec)])
        sources = install.source_options(cell, self.spec)
        if sources:  # absent where no axis has an index of its own: earlier keys still hold
            parts["sources"] = sources
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Record | None:
        try:
            record = Record.from_dict(json.loads(self._path(key).read_text(encoding="utf-8")))
        except UNREADABLE:
            return None  # absent, or unreadable: the cell runs
        return None if record.outcome is Outcome.INFRA_ERROR else record

    def put(self, key: str, record: Record) -> None:
        if record.outcome is Outcome.INFRA_ERROR:
            return  # no verdict
        atomic_write(self._path(key), json.dumps(record.serialize(), sort_keys=True) + "\n")
