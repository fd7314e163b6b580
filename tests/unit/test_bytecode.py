"""Bytecode kept per distribution content and shared by the cells that hold it (probes/_bytecode.py,
run for real by the venv's own interpreter)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

from matrix import probing

UNPACKED_NS = 1_700_000_000 * 10**9


def install(where: Path, dist: str, files: dict[str, str]) -> Path:
    """A real venv (no pip) with a distribution laid out as uv leaves it: every file a hard link
    into uv's cache, so the same file has the same mtime in every venv (here: one fixed mtime)."""
    if not (where / "bin" / "python").exists():
        venv.create(where, with_pip=False)
    site = next(where.glob("lib/python*/site-packages"))
    record = []
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
        os.utime(site / rel, ns=(UNPACKED_NS, UNPACKED_NS))
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(text)}")
    (site / f"{dist}.dist-info").mkdir()
    (site / f"{dist}.dist-info" / "RECORD").write_text("\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n")
    return where


def in_venv(env: Path, code: str, prefix: Path | None = None) -> str:
    extra = {"PYTHONPYCACHEPREFIX": str(prefix)} if prefix else {}
    head = f"import sys; sys.path.insert(0, {str(probing.probes_dir())!r})\n"
    out = subprocess.run([str(env / "bin" / "python"), "-c", head + code],
                         env=dict(os.environ, PYTHONDONTWRITEBYTECODE="", **extra),
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def own_bytecode(prefix: Path) -> list[str]:
    """The .pyc files a run wrote into its own prefix (not through a link into the overlay), but
    for what the interpreter's start-up wrote before the link (set aside) and the probe scripts'."""
    probes = str(probing.probes_dir()).lstrip("/")
    return [os.path.relpath(os.path.join(folder, name), prefix) for folder, _, files in os.walk(prefix)
            for name in files if name.endswith(".pyc") and ".start-up-" not in folder
            and not os.path.relpath(folder, prefix).startswith(probes)]


def link_and_import(env: Path, prefix: Path, overlay: Path, writable: bool = True) -> str:
    # As the probe driver does it: in a process whose start-up already wrote to the prefix.
    in_venv(env, f"import _bytecode; print(_bytecode.link({str(prefix)!r}, {str(overlay)!r}, {writable}))", prefix)
    return in_venv(env, "import pkg; print(pkg.VALUE)", prefix)


def test_a_second_venv_with_the_same_distribution_imports_the_first_ones_bytecode(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"  # made by the first cell that writes to it
    files = {"pkg/__init__.py": "VALUE = 1\n", "pkg/sub.py": "X = 1\n"}
    assert link_and_import(install(tmp_path / "one", "pkg-1.0", files), tmp_path / "p1", overlay) == "1"
    kept = list(overlay.glob("pkg-*/**/*.pyc"))
    assert [p.name.split(".")[0] for p in kept] == ["__init__"]
    stamp = kept[0].stat().st_mtime_ns

    assert link_and_import(install(tmp_path / "two", "pkg-1.0", files), tmp_path / "p2", overlay) == "1"
    assert kept[0].stat().st_mtime_ns == stamp  # read, not compiled again

    # Same name and version, other bytes (same size, same mtime): its own directory, its own bytecode.
    other = install(tmp_path / "other", "pkg-1.0", {"pkg/__init__.py": "VALUE = 2\n", "pkg/sub.py": "X = 1\n"})
    assert link_and_import(other, tmp_path / "p3", overlay) == "2"
    assert len(list(overlay.glob("pkg-*"))) == 2


def test_compiled_ahead_in_the_workbench_and_read_by_the_probes(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    env = install(tmp_path / "env", "pkg-1.0", {"pkg/__init__.py": "VALUE = 3\n", "pkg/sub/deep.py": "Y = 1\n"})
    # The standard library and the one package.
    assert in_venv(env, f"import _bytecode; print(_bytecode.compile_all({str(overlay)!r}))") == "2"
    assert in_venv(env, f"import _bytecode; print(_bytecode.compile_all({str(overlay)!r}))") == "0"  # kept
    names = sorted(p.relative_to(overlay).as_posix().split("/", 1)[1] for p in overlay.glob("pkg-*/**/*.pyc"))
    assert [n.split(".")[0] for n in names] == ["pkg/__init__", "pkg/sub/deep"]
    stdlib = next(overlay.glob("stdlib-*"))
    assert (stdlib / "json" / f"__init__.{sys.implementation.cache_tag}.pyc").is_file()
    assert not list(stdlib.glob("test/**/*.pyc"))  # the interpreter's own tests are not compiled ahead
    before = {p: p.stat().st_mtime_ns for p in overlay.rglob("*.pyc")}
    prefix = tmp_path / "p"
    assert link_and_import(env, prefix, overlay, writable=False) == "3"
    assert in_venv(env, "import json, email.message; print(json.dumps(1))", prefix) == "1"
    assert {p: p.stat().st_mtime_ns for p in overlay.rglob("*.pyc")} == before  # read as compiled, not redone
    assert not own_bytecode(prefix)


def test_the_standard_library_bytecode_is_kept_once_per_interpreter(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    one = install(tmp_path / "one", "pkg-1.0", {"pkg/__init__.py": "import json\nVALUE = json.dumps(4)\n"})
    assert link_and_import(one, tmp_path / "p1", overlay) == "4"
    [stdlib] = overlay.glob("stdlib-*")
    kept = stdlib / "json" / f"__init__.{sys.implementation.cache_tag}.pyc"
    stamp = kept.stat().st_mtime_ns
    two = install(tmp_path / "two", "pkg-1.0", {"pkg/__init__.py": "import json\nVALUE = json.dumps(4)\n"})
    assert link_and_import(two, tmp_path / "p2", overlay) == "4"
    assert kept.stat().st_mtime_ns == stamp  # the second venv of this interpreter read it
    assert not own_bytecode(tmp_path / "p2")


def test_shared_and_unhashed_directories_are_not_linked(tmp_path: Path) -> None:
    env = install(tmp_path / "env", "a-1.0", {"ns/a.py": "VALUE = 'a'\n", "only_a/__init__.py": "VALUE = 0\n"})
    install(env, "b-1.0", {"ns/b.py": "VALUE = 'b'\n"})
    site = next(env.glob("lib/python*/site-packages"))
    (site / "c-1.0.dist-info").mkdir()
    (site / "c-1.0.dist-info" / "RECORD").write_text("c/__init__.py,,\n")
    assert in_venv(env, "import _bytecode; print(sorted(_bytecode.packages(_bytecode.site_packages())))") == \
        "['only_a']"
