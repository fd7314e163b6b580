"""The registry fed by a real sweep (venv backend, real installs): the issue column and fix in the
table, known-good pins written beside the registry, the pin advisor, and the guard run inside
the real broken environment the sweep kept."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MATRIX = """
bases: {py311: {python: "3.11"}}
packages: {numpy: ["1.26.4", "2.2.6"], scipy: ["1.11.4"]}
modes: [layered]
layered_order: [scipy, numpy]
"""


def cm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", *args], capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("flow")
    (d / "matrix.yaml").write_text(MATRIX)
    (d / "registry").mkdir()
    shutil.copy(REPO / "registry" / "known-issues.yaml", d / "registry" / "known-issues.yaml")
    proc = cm("run", "--config", str(d / "matrix.yaml"), "--results", str(d / "results"), "--backend", "venv",
              "--keep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield d
    for kept in (d / "results" / "logs").glob("*/venv-path"):
        cell_dir = Path(kept.read_text().strip()).parent
        shutil.rmtree(cell_dir, ignore_errors=True)
        run_dir = cell_dir.parent  # the run's own directory, kept with its mark (only that one)
        if run_dir.parent == Path(tempfile.gettempdir()) and run_dir.name.startswith("compat-matrix-"):
            shutil.rmtree(run_dir, ignore_errors=True)


def test_the_table_names_the_issue_and_its_fix(swept: Path) -> None:
    with open(swept / "results" / "matrix.csv", newline="") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    assert rows["py311-numpy2.2.6-scipy1.11.4-layered"]["issue"] == "numpy_scipy_incompatibility"
    assert rows["py311-numpy1.26.4-scipy1.11.4-layered"]["issue"] == ""
    md = (swept / "results" / "matrix.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| py311-numpy2.2.6-scipy1.11.4-layered"))
    assert "pip install numpy==1.24.3 scipy==1.10.1" in line
    # the registry's own probe ran in every cell and caught it too
    probes = (swept / "results" / "logs" / "py311-numpy2.2.6-scipy1.11.4-layered" / "probes.jsonl").read_text()
    assert "issue numpy_scipy_incompatibility: import scipy.stats" in probes


def test_known_good_pins_are_written_beside_the_registry_and_the_registry_is_untouched(swept: Path) -> None:
    derived = yaml.safe_load((swept / "registry" / "known-good.yaml").read_text())
    text = yaml.safe_dump(derived)
    assert "1.26.4" in text and "py311" in text
    hand_written = (REPO / "registry" / "known-issues.yaml").read_text()
    assert (swept / "registry" / "known-issues.yaml").read_text() == hand_written


def test_the_pin_advisor_reads_the_sweep(swept: Path) -> None:
    proc = cm("pins", "numpy==2.2.6", "--results", str(swept / "results"),
              "--registry", str(swept / "registry" / "known-issues.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "known issue numpy_scipy_incompatibility" in proc.stdout
    assert "fix: pip install numpy==1.24.3 scipy==1.10.1" in proc.stdout


def test_the_guard_fails_fast_and_clearly_in_the_broken_environment(swept: Path, tmp_path: Path) -> None:
    guard = tmp_path / "guard.py"
    proc = cm("guard", "--output", str(guard), "--registry", str(swept / "registry" / "known-issues.yaml"),
              "--results", str(swept / "results"))
    assert proc.returncode == 0, proc.stderr
    logs = swept / "results" / "logs"
    broken = Path((logs / "py311-numpy2.2.6-scipy1.11.4-layered" / "venv-path").read_text().strip())
    fine = Path((logs / "py311-numpy1.26.4-scipy1.11.4-layered" / "venv-path").read_text().strip())
    bad = subprocess.run([str(broken / "bin" / "python"), str(guard)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    out = bad.stdout + bad.stderr
    assert "numpy_scipy_incompatibility" in out and "pip install numpy==1.24.3 scipy==1.10.1" in out
    good = subprocess.run([str(fine / "bin" / "python"), str(guard)], capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
