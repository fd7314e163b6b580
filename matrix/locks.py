"""Who is running: a held lock per live run, and one writer per results directory.

flock locks die with their process, so a run killed with SIGKILL leaves a lock file nobody holds:
that is how a later run tells a dead run's leftovers from a live concurrent run's objects.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

from matrix.errors import ConfigError
from matrix.paths import state_dir


class _Held:
    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self, *, remove: bool = True) -> None:
        if self._fd < 0:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = -1


def _try_lock(path: Path) -> int | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _run_lock(run_id: str) -> Path:
    return state_dir() / "runs" / f"{run_id}.lock"


def hold_run(run_id: str) -> _Held:
    """Mark this run as live for as long as this process holds the lock."""
    path = _run_lock(run_id)
    fd = _try_lock(path)
    if fd is None:  # a run id is new by construction; a collision is a bug, not bad input
        raise RuntimeError(f"run {run_id} is already live")
    os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())
    return _Held(path, fd)


def is_live(run_id: str) -> bool:
    """True while some process holds the run's lock."""
    path = _run_lock(run_id)
    if not path.exists():
        return False
    fd = _try_lock(path)
    if fd is None:
        return True
    path.unlink(missing_ok=True)  # a dead run's lock: nobody will take it again
    os.close(fd)
    return False


def hold_file(path: Path) -> _Held:
    """Hold a lock at `path` (beside the objects it vouches for) while this process lives or until
    released: whoever looks there (another HOME, another user) can tell a live holder from a dead
    one with file_held. The file appears already locked (made aside, locked, then linked into
    place), so no one ever sees it unheld while its holder lives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it open
        os.fchmod(fd, 0o644)  # others open it to try the lock, whatever the umask
        os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            if file_held(path) is not False:  # a dead holder's is removed by asking
                raise
            os.link(tmp, path)
    except FileExistsError:
        os.close(fd)
        raise RuntimeError(f"{path} is held already") from None
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.unlink(tmp)
    return _Held(path, fd)


def file_held(path: Path) -> bool | None:
    """Whether a live process holds the lock at `path` (hold_file); None when there is no such
    file. A lock nobody holds is removed: its holder died, and nobody takes it again."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return True  # one we may not even open (another user's): not ours to judge dead
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held
        os.close(fd)
        return True
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # another user's, in a sticky directory: it stays, unheld
    finally:
        os.close(fd)
    return False


def hold_results(results_dir: Path) -> _Held:
    """One run writes a results directory at a time. The directory is made if missing; a path that
    cannot be one (a file, a file among its parents, a place nobody may write) or a lock that is
    not a plain file (a directory, a link) is a ConfigError naming the path."""
    path = results_dir / ".lock"
    fix = "pass a directory with --results (it is made if missing)"
    if results_dir.exists() and not results_dir.is_dir():
        raise ConfigError(str(results_dir), "--results", "is a file, not a directory", fix)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        what = "a symbolic link" if path.is_symlink() else "a directory" if path.is_dir() else "not a plain file"
        raise ConfigError(str(path), "--results", f"is {what}, where compat-matrix keeps the directory's lock file",
                          "move it out of the way, or pass another --results directory")
    try:
        fd = _try_lock(path)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        raise ConfigError(str(results_dir), "--results", "cannot be a directory: a part of the path is a file",
                          fix) from None
    except OSError as e:
        raise ConfigError(str(results_dir), "--results", f"cannot make the directory or its lock file there "
                          f"({e.strerror or e})", "check the path and its permissions, or pass another "
                          "--results directory") from None
    if fd is None:
        raise ConfigError(str(results_dir), "--results", "another compat-matrix run is writing this directory",
                          "wait for it to finish, or pass another --results directory")
    return _Held(path, fd)
