"""The registry subcommands (pins, preflight, guard, registry) on a parser of their own."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import yaml

from matrix.errors import EXIT_CONFIG, CompatMatrixError
from matrix.registry import commands as registry_cli
from tests.unit import real_cells

REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"
D = real_cells.DOCKERFILES


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compat-matrix")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers = registry_cli.add_commands(sub)
    assert set(handlers) == {"pins", "preflight", "guard", "registry", "export", "bounds", "schema", "precommit"}
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except CompatMatrixError as e:
        print(f"compat-matrix: {e}")
        return e.exit_code


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    out.mkdir()
    shutil.copy(real_cells.VENV_SWEEP, out / "records.jsonl")
    return out


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    path = tmp_path / "registry" / "known-issues.yaml"
    path.parent.mkdir()
    shutil.copy(REPO_REGISTRY, path)
    return path


def test_pins(results: Path, reg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pins", "scipy==1.10.1", "--base", "py311", "--newest", "numpy",
                "--results", str(results), "--registry", str(reg)]) == 0
    assert "newest numpy that passes with scipy==1.10.1 on py311: 1.26.4" in capsys.readouterr().out
    assert run(["pins", "numpy>=2", "--results", str(results), "--registry", str(reg)]) == EXIT_CONFIG
    assert run(["pins", "numpy==2.0.2", "--results", str(results.parent / "none"), "--registry", str(reg)]) == \
        EXIT_CONFIG
    assert "holds no results" in capsys.readouterr().out


def test_preflight(results: Path, reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text('bases: {py311: {image: "python:3.11-slim-bookworm", python: "3.11"}}\n'
                      'packages: {numpy: ["1.26.4"]}\ninstall: {ca_bundle: none}\n')
    common = ["--results", str(results), "--registry", str(reg), "--config", str(matrix)]
    assert run(["preflight", str(D / "Dockerfile.v74.3"), *common]) == 0
    assert "FROM python:3.11-slim-bookworm is base py311 of the matrix" in capsys.readouterr().out
    assert run(["preflight", str(D / "Dockerfile.v76"), "--baseline", str(D / "Dockerfile.v74.3"), *common]) == 1
    assert "not carried forward" in capsys.readouterr().out
    assert run(["preflight", str(D / "Dockerfile.v74.3"), "--build-arg", "BASE_IMAGE", *common]) == EXIT_CONFIG
    assert run(["preflight", str(D / "Dockerfile.v74.3"), "--build-arg", "BASE_IMAGE=python:3.12-slim-bookworm",
                "--strict", *common]) == 1
    assert "is not a base of the matrix" in capsys.readouterr().out


def test_guard_writes_the_file(results: Path, reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "guard.py"
    assert run(["guard", "--output", str(out), "--results", str(results), "--registry", str(reg)]) == 0
    assert out.is_file() and "RUN python /tmp/guard.py" in capsys.readouterr().out
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("ISSUES_JSON = "))
    assert "py311-numpy2.2.6-scipy1.11.4-layered" in line


def test_registry_validates_suggests_and_writes_known_good(results: Path, reg: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    before = reg.read_bytes()
    assert run(["registry", "--results", str(results), "--registry", str(reg), "--write-known-good"]) == 0
    out = capsys.readouterr().out
    assert "6 issue(s), valid" in out  # numpy/scipy and the five GPU examples
    assert "numpy_scipy_incompatibility: 10 failing cell(s)" in out
    assert "54 failing cell(s), 10 matched, 44 in 3 unmatched group(s)" in out
    assert out.count("suggested entry for the registry:") == 3
    assert reg.read_bytes() == before
    known = yaml.safe_load((reg.parent / "known-good.yaml").read_text())
    assert known["runs"] == ["20261128T131343Z-8d9af3"]


def test_registry_without_results_and_with_a_bad_file(reg: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["registry", "--results", str(tmp_path / "none"), "--registry", str(reg)]) == 0
    assert "no results in" in capsys.readouterr().out
    reg.write_text(reg.read_text().replace("cause:", "caus:"))
    assert run(["registry", "--registry", str(reg)]) == EXIT_CONFIG
    assert "did you mean 'cause'" in capsys.readouterr().out


def test_a_corrupt_records_file_and_a_missing_matrix_file_are_bad_input(
        reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "records.jsonl").write_text(json.dumps({"cell": "x"}) + "\n")
    assert run(["preflight", str(D / "Dockerfile.v74.3"), "--results", str(results), "--registry", str(reg)]) == \
        EXIT_CONFIG
    assert "not a records file" in capsys.readouterr().out
    (results / "records.jsonl").unlink()
    assert run(["preflight", str(D / "Dockerfile.v74.3"), "--results", str(results), "--registry", str(reg),
                "--config", str(tmp_path / "absent.yaml")]) == EXIT_CONFIG
    assert "absent.yaml" in capsys.readouterr().out
