"""Where compat-matrix keeps things, how it writes a file so that a crash leaves the old or the new,
and how it asks the file system to spread a directory's subdirectories.

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


# ioctl(2) requests and the flag of `chattr +T` (linux/fs.h; the requests as on 64-bit Linux).
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x20000


def spread(directory: Path) -> bool:
    """Mark `directory` as the top of a directory hierarchy (ext4's TOPDIR flag, `chattr +T`): the
    directories made in it are then spread over the file system's block groups, each placed from a
    hash of its name, rather than packed where `directory` is. On an ext4 without a journal, a new
    inode is not given the number of one freed in the last minute or more, and finding a free one
    walks past every such inode of its group: directories made, removed and made again in one
    place (venvs, run after run) cost more every run. False where the file system has no such
    flag (nothing else changes)."""
    import fcntl
    import struct

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_TOPDIR_FL))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


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
