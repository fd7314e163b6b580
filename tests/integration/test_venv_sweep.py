"""The embedded venv backend: real interpreters, real installs from the index, no daemon."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from matrix.backends import interpreters

MATRIX = """
bases:
  py311: {python: "3.11"}
  py312: {python: "3.12"}
  image-only: {image: "python:3.11-slim-bookworm"}
packages:
  numpy: ["1.24.3", "1.26.4", "2.2.6"]
  scipy: ["1.11.4"]
modes: [together, layered]
layered_order: [scipy, numpy]
exclude:
  - {base: py311, numpy: "1.24.3", reason: "covered elsewhere"}
  - {base: py312, numpy: "2.2.6", reason: "covered on py311"}
  - {base: py312, numpy: "1.26.4", reason: "covered on py311"}
  - {base: py312, mode: layered, reason: "one no-wheel cell is enough"}
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", "run", *args], capture_output=True, text=True,
                          timeout=1800, env=env)


@pytest.fixture(scope="module")
def venv_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    for v in ("3.11", "3.12"):
        if interpreters.find(v) is None:
            pytest.fail(f"python{v} is needed for these tests (pyenv has it on our machines)")
    d = tmp_path_factory.mktemp("venv")
    (d / "matrix.yaml").write_text(textwrap.dedent(MATRIX))
    return run("--config", str(d / "matrix.yaml"), "--results", str(d / "results"), "--backend", "venv"), d


def test_venv_backend_gives_the_acceptance_outcomes(venv_sweep: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, d = venv_sweep
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(d / "results" / "matrix.csv", newline="") as f:
        got = {r["cell"]: r for r in csv.DictReader(f)}
    # The image-only base's cells have no record here: rows of the table, not run.
    assert {c for c, r in got.items() if r["outcome"] == "not-run"} == {c for c in got if c.startswith("image-only")}
    got = {c: r for c, r in got.items() if not c.startswith("image-only")}
    assert {c: r["outcome"] for c, r in got.items()} == {
        "py311-numpy1.26.4-scipy1.11.4-together": "pass",
        "py311-numpy1.26.4-scipy1.11.4-layered": "pass",
        "py311-numpy2.2.6-scipy1.11.4-together": "resolve-conflict",
        "py311-numpy2.2.6-scipy1.11.4-layered": "import-error",
        "py312-numpy1.24.3-scipy1.11.4-together": "no-wheel",
    }
    assert "numpy.dtype size changed" in got["py311-numpy2.2.6-scipy1.11.4-layered"]["error"]
    assert "numpy==1.24.3" in got["py312-numpy1.24.3-scipy1.11.4-together"]["error"]
    assert {r["backend"] for r in got.values()} == {"venv"}
    assert got["py311-numpy1.26.4-scipy1.11.4-together"]["python"].startswith("3.11.")
    # the image-only base is skipped, with the reason, not failed
    assert "skipped: base image-only names only an image" in proc.stdout


def test_no_venv_is_left_behind(venv_sweep: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    import tempfile

    proc, _ = venv_sweep
    run_id = proc.stdout.split()[2].rstrip(":")
    assert not list(Path(tempfile.gettempdir()).glob(f"compat-matrix-{run_id}-*"))


def test_auto_without_an_engine_runs_venv_and_says_why(tmp_path: Path) -> None:
    import os

    (tmp_path / "matrix.yaml").write_text("bases: {py311: {python: '3.11'}}\npackages: {numpy: ['1.26.4']}\n")
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    proc = run("--config", str(tmp_path / "matrix.yaml"), "--results", str(tmp_path / "r"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "no Docker Engine answered" in first and "running the embedded venv backend instead" in first
    assert "1/1 cells: 1 pass" in proc.stdout


def test_resume_runs_only_the_cells_without_a_verdict(tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text("bases: {py311: {python: '3.11'}}\npackages: {numpy: ['1.26.4', '2.2.6']}\n")
    common = ("--config", str(tmp_path / "matrix.yaml"), "--results", str(tmp_path / "r"), "--backend", "venv")
    first = run(*common, "--select", "*numpy2.2.6*")
    assert first.returncode == 0, first.stdout + first.stderr
    resumed = run(*common, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 cells to run, 1 kept from the last run" in resumed.stdout
    assert "py311-numpy2.2.6-together ..." not in resumed.stdout
    with open(tmp_path / "r" / "matrix.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["cell"], r["outcome"]) for r in rows] == [
        ("py311-numpy1.26.4-together", "pass"), ("py311-numpy2.2.6-together", "pass")]


def test_shards_merged_equal_an_unsharded_run(tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text(
        "bases: {py311: {python: '3.11'}}\npackages: {numpy: ['1.26.4', '2.2.6'], scipy: ['1.11.4']}\n"
        "modes: [together, layered]\nlayered_order: [scipy, numpy]\n")
    cfg = ("--config", str(tmp_path / "matrix.yaml"), "--backend", "venv")
    assert run(*cfg, "--results", str(tmp_path / "whole")).returncode == 0
    for k in (1, 2):
        proc = run(*cfg, "--results", str(tmp_path / f"s{k}"), "--shard", f"{k}/2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = subprocess.run([sys.executable, "-m", "matrix", "merge", "--config", str(tmp_path / "matrix.yaml"),
                             str(tmp_path / "s1"), str(tmp_path / "s2"), "--results", str(tmp_path / "merged")],
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr

    def table(d: str) -> list[dict[str, str]]:
        with open(tmp_path / d / "matrix.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k != "duration_s"} for r in csv.DictReader(f)]

    assert table("merged") == table("whole")
    assert len(table("whole")) == 4


def test_a_base_that_moves_under_a_passing_cell_is_a_regression(tmp_path: Path) -> None:
    config = tmp_path / "matrix.yaml"
    common = ("--config", str(config), "--results", str(tmp_path / "r"), "--backend", "venv")
    config.write_text("bases: {py: {python: '3.11'}}\npackages: {numpy: ['1.26.4']}\n")
    first = run(*common)
    assert first.returncode == 0 and "1 pass" in first.stdout, first.stdout + first.stderr
    # a sweep with nothing new keeps the cached verdict ...
    again = run(*common, "--resume", "--fail-on-regression")
    assert again.returncode == 0 and "0 cells to run, 1 kept from the last run" in again.stdout, again.stdout
    # ... until the base moves under it (same cell id): numpy 1.26.4 has no cp313 wheel
    config.write_text("bases: {py: {python: '3.13'}}\npackages: {numpy: ['1.26.4']}\n")
    second = run(*common, "--resume", "--fail-on-regression")
    assert second.returncode == 1, second.stdout + second.stderr
    assert "1 cells to run" in second.stdout
    assert "1 regression(s) since the last run:" in second.stdout
    md = (tmp_path / "r" / "matrix.md").read_text()
    assert "## Changed since the last run" in md and "pass → no-wheel" in md
    ids = [p.stdout.split()[2].rstrip(":") for p in (first, second)]
    back = subprocess.run([sys.executable, "-m", "matrix", "diff", *ids, "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60)
    assert back.returncode == 1 and "regressions (1)" in back.stdout


def test_specifier_axes_expand_from_the_real_index_as_of_a_date(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "bases: {py311: {python: '3.11'}}\n"
        "packages: {numpy: {spec: '>=1.24,<3', pick: latest-patch-per-minor}}\n")
    proc = subprocess.run([sys.executable, "-m", "matrix", "list", "--config", str(tmp_path / "m.yaml"),
                           "--as-of", "2025-01-01"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"py311-numpy{v}-together"
                                   for v in ("1.24.4", "1.25.2", "1.26.4", "2.0.2", "2.1.3", "2.2.1")]
