"""The exported constraints work where people use them: a real 6-cell sweep (venv backend, real
index), `export constraints`, then `uv pip install -c <file> numpy scipy` into a fresh venv and the
probes run there: pass. Each file's header names the run that gave its pins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from uv import find_uv_bin

from matrix import probing
from matrix.backends import interpreters
from matrix.store import Outcome, load_records

REPO = Path(__file__).resolve().parents[2]
# Six cells: together 2 × 2 (two of them refused by scipy 1.11.4's numpy<1.28), layered scipy 1.11.4 × 2
# (numpy 2.2.6 over it breaks at import): the modes' newest passing pins differ, so a file per mode.
MATRIX = """
bases: {py311: {python: "3.11"}}
packages: {numpy: ["1.26.4", "2.2.6"], scipy: ["1.11.4", "1.14.1"]}
modes: [together, layered]
layered_order: [scipy, numpy]
exclude:
  - {mode: layered, scipy: "1.14.1", reason: "six cells are enough"}
"""


def cm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", *args], capture_output=True, text=True, timeout=900,
                          env=env)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if interpreters.find("3.11") is None:
        pytest.fail("no CPython 3.11 on this machine (pyenv or PATH): the venv backend's test base")
    d = tmp_path_factory.mktemp("export")
    (d / "matrix.yaml").write_text(MATRIX)
    (d / "registry").mkdir()
    shutil.copy(REPO / "registry" / "known-issues.yaml", d / "registry" / "known-issues.yaml")
    # A result cache of its own: every cell runs in this one run (the header names it), whatever other
    # tests of the session kept of the same cells.
    own_cache = dict(os.environ, COMPAT_MATRIX_CACHE=str(d / "cache"))
    ran = cm("run", "--config", str(d / "matrix.yaml"), "--results", str(d / "results"), "--backend", "venv",
             env=own_cache)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    records = {r.cell: r for r in load_records(d / "results" / "records.jsonl")}
    assert len(records) == 6
    assert records["py311-numpy2.2.6-scipy1.14.1-together"].outcome is Outcome.PASS
    assert records["py311-numpy2.2.6-scipy1.11.4-layered"].outcome is Outcome.IMPORT_ERROR
    out = cm("export", "constraints", "--results", str(d / "results"),
             "--registry", str(d / "registry" / "known-issues.yaml"), "--output", str(d / "constraints"))
    assert out.returncode == 0, out.stdout + out.stderr
    (run_id,) = {r.run_id for r in records.values()}
    return d / "constraints", run_id


def probe_in(venv: Path, pins: dict[str, str], work: Path) -> tuple[probing.DriverReport, Outcome]:
    nonce = probing.new_nonce()
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    # probing.environment reads only the cell's pins
    cell = SimpleNamespace(pin_dict=pins)
    env.update(probing.environment(cell, nonce, 120.0, pycache=str(work / "pycache")), HOME=str(work))  # type: ignore[arg-type]
    proc = subprocess.run([str(venv / "bin" / "python"), str(probing.probes_dir() / "_driver.py")], env=env,
                          capture_output=True, text=True, timeout=600, cwd=work)
    ran = probing.RunResult(proc.returncode, proc.stdout, proc.stderr)
    report = probing.parse(proc.stdout, nonce)
    return report, probing.judge(ran, report, "none").outcome


@pytest.mark.parametrize(("name", "pins"), [
    ("py311-together.txt", {"numpy": "2.2.6", "scipy": "1.14.1"}),
    ("py311-layered.txt", {"numpy": "1.26.4", "scipy": "1.11.4"}),
])
def test_uv_installs_with_the_exported_constraints_and_the_probes_pass(
        exported: tuple[Path, str], tmp_path: Path, name: str, pins: dict[str, str]) -> None:
    directory, run_id = exported
    assert sorted(p.name for p in directory.iterdir()) == ["py311-layered.txt", "py311-together.txt"]
    text = (directory / name).read_text()
    assert f"run {run_id}, date {run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}" in text
    assert "backend venv" in text and "base py311: python 3.11." in text
    if name == "py311-layered.txt":
        assert "#   numpy==2.2.6 scipy==1.11.4 (layered): import-error: known issue numpy_scipy_incompatibility" in text
    uv = find_uv_bin()
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    if os.environ.get("PIP_CERT"):
        env["SSL_CERT_FILE"] = os.environ["PIP_CERT"]
    venv = tmp_path / "venv"
    python = interpreters.find("3.11")
    assert python is not None
    made = subprocess.run([uv, "venv", "--quiet", "--python", python.path, str(venv)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    # The package names only: the versions come from the constraints file.
    installed = subprocess.run([uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--only-binary",
                                ":all:", "-c", str(directory / name), "numpy", "scipy"], env=env,
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    report, outcome = probe_in(venv, pins, tmp_path)
    assert report.installed == pins
    assert outcome is Outcome.PASS, json.dumps(report.probes, indent=1)
