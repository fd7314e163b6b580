"""Where compat-matrix keeps things, and how it writes a file so that a crash leaves the old or the new.

The bottom layer: imports nothing from the package.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def cache_root() -> Path:
    """Where compat-matrix keeps what outlives a run on this machine: COMPAT_MATRIX_CACHE, else
    compat-matrix under XDG_CACHE_HOME (~/.cache)."""
    if os.environ.get("COMPAT_MATRIX_CACHE"):
        return Path(os.environ["COMPAT_MATRIX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "compat-matrix"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "compat-matrix"


def _umask() -> int:
    """The process's umask (read by setting it, at import: before any thread runs)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files are made as the user's umask says (mkstemp alone makes them 0600: results nobody else reads).
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, text: str | Iterable[str]) -> None:
    """Write via a temporary file and a rename: a crash leaves the old file or the new one. The file
    gets the mode an ordinary write would give it (the user's umask). `text` may come in pieces (a
    large file need not be in memory whole); one that fails half-way leaves the old file too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            if isinstance(text, str):
                f.write(text)
            else:
                f.writelines(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
