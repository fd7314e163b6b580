"""Finding host interpreters for the venv backend (runs the real ones found on this machine)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from matrix.backends import interpreters


def test_this_interpreter_is_found_by_path_and_by_version() -> None:
    major_minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    here = interpreters.find(sys.executable)
    assert here is not None and here.version == f"{major_minor}.{sys.version_info[2]}"
    by_version = interpreters.find(major_minor)
    assert by_version is not None and by_version.version.startswith(major_minor + ".")


def test_pyenv_versions_are_found_newest_patch_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("3.99.1", "3.99.10", "3.99.2", "not-a-version"):
        b = tmp_path / "versions" / v / "bin"
        b.mkdir(parents=True)
        exe = b / "python3.99"
        exe.write_text(f"#!/bin/sh\necho {v}\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    interpreters.find.cache_clear()
    try:
        found = interpreters.find("3.99")
    finally:
        interpreters.find.cache_clear()
    assert found == interpreters.Interpreter(str(tmp_path / "versions/3.99.10/bin/python3.99"), "3.99.10")


def test_missing_interpreters_are_none() -> None:
    assert interpreters.find("/no/such/python") is None
    assert interpreters.find("3.98") is None
    assert interpreters.find("compat-matrix-no-such-python") is None
