"""The guard, run for real: the rendered file in a subprocess, with this interpreter and an old one."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from matrix import registry
from matrix.registry import guardfile
from tests.unit import real_cells

GUARD = guardfile.TEMPLATE
REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"
DTYPE = ("ValueError: numpy.dtype size changed, may indicate binary incompatibility. "
         "Expected 96 from C header, got 88 from PyObject")


def registry_with(probe: str, error: str = '"numpy.dtype size changed"') -> registry.Registry:
    return registry.parse(f"""
- issue: numpy_scipy_incompatibility
  error: {error}
  cause: "Binary incompatibility between NumPy and SciPy versions"
  solution: "pip install numpy==1.24.3 scipy==1.10.1"
  versions: [v74.3, v76]
  probe: {json.dumps(probe)}
- issue: sanity
  error: "interpreter is broken"
  cause: "nothing"
  solution: "nothing"
  probe: "import json, os.path"
""")


def run_guard(tmp_path: Path, reg: registry.Registry, python: str = sys.executable,
              records: list | None = None) -> subprocess.CompletedProcess[str]:
    path = guardfile.write(tmp_path / "guard.py", reg, records or [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([python, str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
                          check=False)


def test_the_guard_imports_only_the_standard_library_and_parses_as_python_3_6() -> None:
    tree = ast.parse(GUARD.read_text(encoding="utf-8"), feature_version=(3, 6))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import would need the matrix package"
            imported.add((node.module or "").split(".")[0])
    assert imported and imported <= sys.stdlib_module_names
    # Syntax newer than 3.6 that feature_version does not catch.
    assert not any(isinstance(n, ast.NamedExpr) for n in ast.walk(tree))
    assert not any(isinstance(n, (ast.AnnAssign,)) or getattr(n, "returns", None) for n in ast.walk(tree))
    assert "from __future__ import annotations" not in GUARD.read_text()


def test_passing_probes_exit_0(tmp_path: Path) -> None:
    done = run_guard(tmp_path, registry_with("import json; assert json.loads('[1]') == [1]"))
    assert done.returncode == 0, done.stderr
    assert "guard: ok    import json; assert json.loads('[1]') == [1]" in done.stdout
    assert "guard: ok    import json, os.path" in done.stdout


def test_a_known_signature_prints_the_banner_and_exits_1(tmp_path: Path) -> None:
    reg = registry_with(f"raise ValueError({DTYPE.split(': ', 1)[1]!r})")
    done = run_guard(tmp_path, reg, records=real_cells.bookworm())
    assert done.returncode == 1
    err = done.stderr
    assert "KNOWN ISSUE: numpy_scipy_incompatibility" in err
    assert f"  error:      {DTYPE}" in err
    assert "  cause:      Binary incompatibility between NumPy and SciPy versions" in err
    assert "  tested fix: pip install numpy==1.24.3 scipy==1.10.1" in err
    assert "  seen in:    image versions v74.3, v76; cells bookworm-py311-numpy2.2.6-scipy1.11.4-layered" in err
    assert "guard: 1 known issue(s) detected" in err
    assert "guard: ok    import json, os.path" in done.stdout  # the other checks still ran


def test_a_regex_signature_is_matched_in_the_image(tmp_path: Path) -> None:
    reg = registry_with(f"raise ValueError({DTYPE.split(': ', 1)[1]!r})",
                        error='{regex: "dtype size changed.*Expected \\\\d+ from C header"}')
    done = run_guard(tmp_path, reg)
    assert done.returncode == 1 and "KNOWN ISSUE: numpy_scipy_incompatibility" in done.stderr


def test_an_unknown_failure_exits_2_with_its_output(tmp_path: Path) -> None:
    done = run_guard(tmp_path, registry_with("raise RuntimeError('something else entirely')"))
    assert done.returncode == 2
    assert "no known issue matches" in done.stderr and "RuntimeError: something else entirely" in done.stderr


def test_a_check_of_a_package_not_installed_is_skipped(tmp_path: Path) -> None:
    done = run_guard(tmp_path, registry_with("import compat_matrix_no_such_package.stats"))
    assert done.returncode == 0, done.stderr
    assert "guard: skip  import compat_matrix_no_such_package.stats (compat_matrix_no_such_package is not installed)" \
        in done.stdout


def test_an_issue_without_a_probe_imports_the_packages_of_its_fix(tmp_path: Path) -> None:
    reg = registry.parse("""
- issue: json_fix
  error: "json is broken"
  cause: "x"
  solution: "pip install json==1.0 compat-matrix-no-such==2.0"
""")
    done = run_guard(tmp_path, reg)
    assert done.returncode == 0, done.stderr
    assert "guard: ok    import json" in done.stdout
    assert "guard: skip  import compat_matrix_no_such" in done.stdout


def test_the_embedded_entries_are_the_registrys(tmp_path: Path) -> None:
    reg = registry.load(REPO_REGISTRY)
    source = guardfile.render(reg, real_cells.bookworm())
    [line] = [ln for ln in source.splitlines() if ln.startswith("ISSUES_JSON = ")]
    embedded = json.loads(ast.literal_eval(line.split(" = ", 1)[1]))
    assert embedded == guardfile.payload(reg, real_cells.bookworm())
    assert embedded[0]["error"] == {"substring": "numpy.dtype size changed"}
    assert embedded[0]["seen_in"] == ["bookworm-py311-numpy2.2.6-scipy1.11.4-layered"]
    assert source.isascii()


def _python36() -> str | None:
    candidates = [shutil.which("python3.6") or ""]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(root, "versions", "3.6*", "bin", "python3.6")))
    for exe in candidates:
        if exe and subprocess.run([exe, "-c", "import sys; assert sys.version_info[:2] == (3, 6)"],
                                  capture_output=True, check=False).returncode == 0:
            return exe
    return None


def test_the_guard_runs_on_python_3_6(tmp_path: Path) -> None:
    python = _python36()
    if python is None:
        pytest.skip("no Python 3.6 interpreter on this machine")
    done = run_guard(tmp_path, registry_with(f"raise ValueError({DTYPE.split(': ', 1)[1]!r})"), python=python)
    assert done.returncode == 1, done.stderr
    assert "KNOWN ISSUE: numpy_scipy_incompatibility" in done.stderr
    assert "guard: ok    import json, os.path" in done.stdout


def _venv_with(tmp_path: Path, files: dict[str, str], base: str = sys.executable) -> str:
    """A real venv (no pip) of the base interpreter whose site-packages holds the given files; its python."""
    venv = tmp_path / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    for name, text in files.items():
        path = Path(site) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return python


@pytest.mark.parametrize("base", ["this", "3.6"])
def test_a_module_missing_under_an_installed_package_fails_the_check(tmp_path: Path, base: str) -> None:
    interpreter = sys.executable if base == "this" else _python36()
    if interpreter is None:
        pytest.skip("no Python 3.6 interpreter on this machine")
    # What scipy without numpy does: the package is installed, its __init__ imports numpy.
    python = _venv_with(tmp_path, {"cm_scipy_like/__init__.py": "import cm_numpy_like\n",
                                   "cm_scipy_like/stats.py": ""}, interpreter)
    done = run_guard(tmp_path, registry_with("import cm_scipy_like.stats"), python=python)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "guard: FAIL  import cm_scipy_like.stats (exited with 1, no known issue matches)" in done.stderr
    assert "cm_numpy_like is not installed, but the installed package cm_scipy_like needs it (" in done.stderr
    assert "skip" not in done.stdout
    assert "guard: ok    import json, os.path" in done.stdout


def test_a_check_whose_own_import_is_missing_is_still_skipped_in_a_venv(tmp_path: Path) -> None:
    python = _venv_with(tmp_path, {"cm_scipy_like/__init__.py": "import cm_numpy_like\n"})
    # The check imports the absent module itself (also through importlib): the package is absent.
    for probe in ("import cm_numpy_like", "import importlib; importlib.import_module('cm_numpy_like.core')"):
        done = run_guard(tmp_path, registry_with(probe), python=python)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "(cm_numpy_like is not installed)" in done.stdout


def test_a_missing_dependency_can_be_a_known_issue(tmp_path: Path) -> None:
    python = _venv_with(tmp_path, {"cm_scipy_like/__init__.py": "import cm_numpy_like\n"})
    done = run_guard(tmp_path, registry_with("import cm_scipy_like", error='"No module named \'cm_numpy_like\'"'),
                     python=python)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "KNOWN ISSUE: numpy_scipy_incompatibility" in done.stderr


def test_the_guard_searches_a_regex_in_what_the_registry_does() -> None:
    import runpy

    from matrix import probing

    guard = runpy.run_path(str(probing.probes_dir() / "_guard.py"))  # a script that runs in users' images
    assert guard["MATCH_CHARS"] == registry.MATCH_CHARS
    for text in ("short", "x" * 10_000, "a b " * 50_000):
        assert guard["bounded"](text) == registry.bounded_text(text)


def test_a_regex_signature_at_the_end_of_a_long_output_is_found(tmp_path: Path) -> None:
    probe = f"import sys; print('noise ' * 20000); raise ValueError({DTYPE.split(': ', 1)[1]!r})"
    done = run_guard(tmp_path, registry_with(probe, error='{regex: "dtype size changed.*Expected \\\\d+"}'))
    assert done.returncode == 1 and "KNOWN ISSUE: numpy_scipy_incompatibility" in done.stderr
