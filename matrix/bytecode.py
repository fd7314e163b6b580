"""Bytecode shared between venv cells that hold the same distribution.

Importing numpy + scipy takes 2.5 s from source and 0.9 s from bytecode, and a fresh venv has
none; compiling all of a distribution at install time (what pip does) costs more than it saves.
So the probes write bytecode to a prefix (PYTHONPYCACHEPREFIX), and in that prefix each package
directory of the venv is a link to a directory kept across cells and runs for that distribution's
content: its dist-info name and the hash of its RECORD (every file's sha256). A later cell with a
distribution of the same key imports what an earlier one compiled. Sources under one key are the
same bytes by construction, so no .pyc there can be stale for them, whatever mtimes uv's unpacking
gave the files (which can coincide between numpy versions: paths alone would not be safe).

Only the embedded venv backend uses it: its probes run as the user anyway, so bytecode they wrote
is no less trusted than the venvs they ran in. The docker backend never lets a probe container
write anything another cell reads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from matrix import probing


@lru_cache(maxsize=1)
def _fingerprint() -> ModuleType:
    path = probing.probes_dir() / probing.FINGERPRINT
    spec = importlib.util.spec_from_file_location("compat_matrix_fingerprint", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def site_packages(venv: Path) -> Path | None:
    return next(iter(sorted(venv.glob("lib/python*/site-packages"))), None)


def packages(site: Path) -> dict[str, str]:
    """Top-level package directory → the key of the one distribution that owns it. Directories
    two distributions share (namespace packages), and distributions whose RECORD leaves a file
    without a hash (content unknown), are left out: their bytecode stays the cell's own."""
    owners: dict[str, set[str]] = {}
    for record in sorted(site.glob("*.dist-info/RECORD")):
        entries = _fingerprint().record_entries(str(record))
        tops = {e.split("\0", 1)[0].split("/", 1)[0] for e in entries or [] if "/" in e.split("\0", 1)[0]}
        key = None
        if entries is not None:
            key = f"{record.parent.name}-{hashlib.sha256(chr(10).join(entries).encode()).hexdigest()[:20]}"
        for top in tops:
            if not top.endswith((".dist-info", ".data")):
                owners.setdefault(top, set()).add(key or "")
    return {top: keys.pop() for top, keys in owners.items() if len(keys) == 1 and "" not in keys}


def link(venv: Path, prefix: Path, overlay: Path) -> int:
    """Make the probes' bytecode of each of the venv's packages go to (and come from) its
    distribution's directory in `overlay`; returns how many packages are linked."""
    site = site_packages(venv)
    if site is None:
        return 0
    mirror = prefix / str(site.resolve()).lstrip("/")
    mirror.mkdir(parents=True, exist_ok=True)
    linked = 0
    for top, key in packages(site).items():
        kept = overlay / key / top
        kept.mkdir(parents=True, exist_ok=True)
        os.symlink(kept, mirror / top, target_is_directory=True)
        linked += 1
    return linked
