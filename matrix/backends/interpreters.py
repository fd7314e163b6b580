"""Finds the host interpreter a base names, for the venv backend.

"3.12" is looked up under pyenv (newest patch first) and then on PATH; a path or a command name
is taken as it is. Every candidate is run once to prove it starts and to learn its version.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from matrix.paths import atomic_write

_VERSION = re.compile(r"^[0-9]+\.[0-9]+$")


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str


def _pyenv_root() -> Path | None:
    root = os.environ.get("PYENV_ROOT")
    if root:
        return Path(root)
    default = Path.home() / ".pyenv"
    return default if default.is_dir() else None


def _pyenv_candidates(version: str) -> list[Path]:
    root = _pyenv_root()
    if root is None or not (root / "versions").is_dir():
        return []
    found = []
    for d in (root / "versions").iterdir():
        try:
            v = Version(d.name)
        except InvalidVersion:
            continue  # virtualenvs and other builds carry other names
        if f"{v.major}.{v.minor}" == version:
            found.append((v, d / "bin" / f"python{version}"))
    return [p for _, p in sorted(found, reverse=True)]


def _path_candidates(command: str) -> list[Path]:
    # pyenv's shims answer for versions that are not active; skip them, pyenv is searched apart.
    shims = str((_pyenv_root() or Path("/nonexistent")) / "shims")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != shims)
    hit = shutil.which(command, path=path)
    return [Path(hit)] if hit else []


@functools.cache
def find(python: str) -> Interpreter | None:
    """The interpreter `python` names on this machine, or None."""
    if _VERSION.match(python):
        candidates = _pyenv_candidates(python) + _path_candidates(f"python{python}")
    elif "/" in python:
        candidates = [Path(python)]
    else:
        candidates = _path_candidates(python)
    for c in candidates:
        found = _probe(c)
        if found and (not _VERSION.match(python) or found.version.startswith(python + ".")):
            return found
    return None


def _probe(path: Path) -> Interpreter | None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        return None
    # Asking an interpreter its version costs a process start (40 ms, most of an unchanged
    # re-run): the answer is kept for as long as the file that gave it is the same file.
    from matrix.paths import cache_root

    st = path.resolve().stat()
    key = f"{path}|{path.resolve()}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"
    known = cache_root() / "interpreters.json"
    try:
        answers = json.loads(known.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        answers = {}
    if isinstance(answers, dict) and isinstance(answers.get(key), str):
        return Interpreter(str(path), answers[key])
    try:
        out = subprocess.run(
            [str(path), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True, text=True, timeout=30, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    version = out.stdout.strip()
    try:
        atomic_write(known, json.dumps({**(answers if isinstance(answers, dict) else {}), key: version}))
    except OSError:
        pass  # asked again next time
    return Interpreter(str(path), version)
