"""Bytecode kept per distribution content and shared by the venv cells that hold it."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import venv
from pathlib import Path

from matrix import bytecode


def install(where: Path, dist: str, files: dict[str, str]) -> Path:
    """A real venv (no pip) with a distribution laid out as an installer leaves it."""
    if not (where / "bin" / "python").exists():
        venv.create(where, with_pip=False)
    site = bytecode.site_packages(where)
    assert site is not None
    record = []
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(text)}")
    (site / f"{dist}.dist-info").mkdir()
    (site / f"{dist}.dist-info" / "RECORD").write_text("\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n")
    return where


def imports(env: Path, prefix: Path, module: str) -> str:
    out = subprocess.run([str(env / "bin" / "python"), "-c", f"import {module}; print({module}.VALUE)"],
                         env=dict(os.environ, PYTHONPYCACHEPREFIX=str(prefix), PYTHONDONTWRITEBYTECODE=""),
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_a_second_venv_with_the_same_distribution_imports_the_first_ones_bytecode(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    one = install(tmp_path / "one", "pkg-1.0", {"pkg/__init__.py": "VALUE = 1\n", "pkg/sub.py": "X = 1\n"})
    assert bytecode.link(one, tmp_path / "p1", overlay) == 1
    assert imports(one, tmp_path / "p1", "pkg") == "1"
    kept = list(overlay.rglob("*.pyc"))
    assert [p.name.split(".")[0] for p in kept] == ["__init__"]
    stamp = kept[0].stat().st_mtime_ns

    two = install(tmp_path / "two", "pkg-1.0", {"pkg/__init__.py": "VALUE = 1\n", "pkg/sub.py": "X = 1\n"})
    bytecode.link(two, tmp_path / "p2", overlay)
    assert imports(two, tmp_path / "p2", "pkg") == "1"
    assert kept[0].stat().st_mtime_ns == stamp  # read, not compiled again

    # Same name and version, other bytes (same size, same second): its own directory, its own bytecode.
    other = install(tmp_path / "other", "pkg-1.0", {"pkg/__init__.py": "VALUE = 2\n", "pkg/sub.py": "X = 1\n"})
    bytecode.link(other, tmp_path / "p3", overlay)
    assert imports(other, tmp_path / "p3", "pkg") == "2"
    assert len(list(overlay.iterdir())) == 2


def test_shared_and_unhashed_directories_are_not_linked(tmp_path: Path) -> None:
    env = install(tmp_path / "env", "a-1.0", {"ns/a.py": "VALUE = 'a'\n", "only_a/__init__.py": "VALUE = 0\n"})
    install(env, "b-1.0", {"ns/b.py": "VALUE = 'b'\n"})
    site = bytecode.site_packages(env)
    assert site is not None
    (site / "c-1.0.dist-info").mkdir()
    (site / "c-1.0.dist-info" / "RECORD").write_text("c/__init__.py,,\n")
    assert sorted(bytecode.packages(site)) == ["only_a"]
