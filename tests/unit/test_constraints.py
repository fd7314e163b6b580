"""Constraints files from real records (the committed 96-cell venv sweep), `pins --format`, and the
pre-commit hook's reading of requirements files and git baselines."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from matrix import cli, registry
from matrix.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, ConfigError
from matrix.registry import advisor, constraints, hook
from matrix.store import Outcome, Record
from tests.unit import real_cells

REPO = Path(__file__).resolve().parents[2]
REG = registry.load(REPO / "registry" / "known-issues.yaml")
RUN = "20261128T131343Z-8d9af3"  # the run of tests/resources/records/venv-sweep-20261128.jsonl


def pin_lines(text: str) -> list[str]:
    """What pip reads of a constraints file: the lines that are not comments, each one requirement."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for ln in lines:
        req = Requirement(ln)
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", ln
    return lines


def by_name(export: constraints.Export) -> dict[str, constraints.ConstraintsFile]:
    return {f.name: f for f in export.files}


def test_one_file_per_base_with_the_newest_passing_pins_and_the_run_in_the_header() -> None:
    files = by_name(constraints.build(real_cells.venv_sweep(), REG))
    assert sorted(files) == ["py310.txt", "py311.txt", "py312.txt", "py313.txt"]
    py311 = files["py311.txt"]
    assert pin_lines(py311.text) == ["numpy==2.2.6", "scipy==1.14.1"]
    assert py311.modes == ("together", "layered")
    header = py311.text.split("numpy==2.2.6\n")[0]
    assert f"run {RUN}, date 2026-11-28" in header
    assert "backend venv" in header and "base py311: python 3.11.7" in header
    assert "cell py311-numpy2.2.6-scipy1.14.1-together (8 of 12 cells passed on py311·together)" in header
    # known-bad combinations, with the issue they hit and its fix
    assert "#   numpy==2.2.6 scipy==1.11.4 (layered): import-error: known issue numpy_scipy_incompatibility\n" \
           "#     fix: pip install numpy==1.24.3 scipy==1.10.1\n" in py311.text
    assert "#   numpy==2.2.6 scipy==1.11.4 (together): resolve-conflict: Because scipy==1.11.4 depends on " \
           "numpy>=1.21.6,<1.28.0" in py311.text
    # a missing wheel is not a bad combination: it is said apart
    py312 = files["py312.txt"].text
    bad, _, no_wheel = py312.partition("# No wheel for py312")
    assert "numpy==1.24.3 scipy==1.14.1" not in bad and "#   numpy==1.24.3 scipy==1.14.1\n" in no_wheel


def test_modes_that_disagree_get_a_file_each() -> None:
    records = [r for r in real_cells.venv_sweep() if r.cell != "py311-numpy2.2.6-scipy1.14.1-layered"]
    files = by_name(constraints.build(records, REG, base="py311"))
    assert sorted(files) == ["py311-layered.txt", "py311-together.txt"]
    assert pin_lines(files["py311-together.txt"].text) == ["numpy==2.2.6", "scipy==1.14.1"]
    assert pin_lines(files["py311-layered.txt"].text) == ["numpy==2.0.2", "scipy==1.14.1"]
    assert "install mode layered:" in files["py311-layered.txt"].text


def test_warn_and_infra_error_are_not_known_good() -> None:
    records = []
    for r in real_cells.venv_sweep():
        if r.cell == "py311-numpy2.2.6-scipy1.14.1-together":
            r = dataclasses.replace(r, outcome=Outcome.WARN, error="compiled using NumPy 1.x")
        elif r.cell == "py311-numpy2.2.6-scipy1.14.1-layered":
            r = dataclasses.replace(r, outcome=Outcome.INFRA_ERROR, error="disk full")
        records.append(r)
    files = by_name(constraints.build(records, REG, base="py311"))
    # the warned cell is not known-good; the layered cell with no verdict says nothing: both modes'
    # newest passing pins are then the same, one file
    assert list(files) == ["py311.txt"]
    assert pin_lines(files["py311.txt"].text) == ["numpy==2.0.2", "scipy==1.14.1"]


def test_hostile_failure_text_stays_a_comment_and_credentials_never_show() -> None:
    hostile = Record(cell="py311-numpy9.9-together", base="py311", mode="together", pins={"numpy": "9.9"},
                     outcome=Outcome.BUILD_ERROR, run_id=RUN, backend="venv",
                     error="boom\nnumpy==0.0.1\n\r--index-url https://user:s3cret@evil.example/simple\n")
    export = constraints.build([*real_cells.venv_sweep(), hostile], REG, base="py311")
    text = export.files[0].text
    assert pin_lines(text) == ["numpy==2.2.6", "scipy==1.14.1"]
    assert "s3cret" not in text and "https://***@evil.example" in text


def test_the_same_records_give_the_same_bytes_and_an_unknown_base_is_bad_input() -> None:
    a = constraints.build(real_cells.venv_sweep(), REG)
    b = constraints.build(list(reversed(real_cells.venv_sweep())), REG)
    assert a == b
    with pytest.raises(ConfigError) as info:
        constraints.build(real_cells.venv_sweep(), REG, base="py3111")
    assert "--base" in str(info.value) and "did you mean 'py311'" in str(info.value)


def test_no_passing_cell_no_file() -> None:
    records = [r for r in real_cells.bookworm() if r.outcome is not Outcome.PASS]
    export = constraints.build(records, REG)
    assert export.files == ()
    assert ("bookworm-py311", "layered", 1) in export.no_pass


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    out.mkdir()
    shutil.copy(real_cells.VENV_SWEEP, out / "records.jsonl")
    return out


def test_the_export_command(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = str(REPO / "registry" / "known-issues.yaml")
    out = tmp_path / "constraints"
    assert cli.main(["export", "constraints", "--results", str(results), "--registry", reg,
                     "--output", str(out), "--base", "py311"]) == EXIT_OK
    assert [p.name for p in out.iterdir()] == ["py311.txt"]
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["export", "constraints", "--results", str(tmp_path / "none"), "--registry", reg,
                     "--output", str(out)]) == EXIT_CONFIG
    (tmp_path / "file").write_text("")
    assert cli.main(["export", "constraints", "--results", str(results), "--registry", reg,
                     "--output", str(tmp_path / "file")]) == EXIT_CONFIG
    assert "--output" in capsys.readouterr().err


def test_pins_formats(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--results", str(results), "--registry", str(REPO / "registry" / "known-issues.yaml")]
    assert cli.main(["pins", "numpy==2.2.6", "--base", "py311", "--format", "json", *common]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["query"] == {"name": "numpy", "version": "2.2.6"}
    assert data["passing"][0]["partners"] == {"scipy": "1.14.1"}
    assert {f["issue"]["name"] for f in data["failing"] if f["issue"]} == {"numpy_scipy_incompatibility"}
    assert cli.main(["pins", "numpy==2.2.6", "--base", "py311", "--format", "constraints", *common]) == EXIT_OK
    assert pin_lines(capsys.readouterr().out) == ["numpy==2.2.6", "scipy==1.14.1"]
    # nothing passed with it on py312 (no wheel of numpy 1.24.3 there): no constraints, exit 1
    assert cli.main(["pins", "numpy==1.24.3", "--base", "py312", "--format", "constraints", *common]) == EXIT_FAILED


def test_advice_constraints_lists_the_known_bad_partners() -> None:
    advice = advisor.advise(real_cells.venv_sweep(), "scipy==1.11.4", base="py311", registry=REG)
    text = constraints.advice_constraints(advice)
    assert text is not None
    assert pin_lines(text) == ["scipy==1.11.4", "numpy==1.26.4"]
    assert "#   numpy==2.2.6 (py311·layered): import-error: known issue numpy_scipy_incompatibility" in text


# The pre-commit hook's reading: requirements files, and the last committed version as the baseline.

def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   check=True, capture_output=True, timeout=60)


def test_a_requirements_file_is_one_together_install_and_head_is_its_baseline(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    req = tmp_path / "requirements.txt"
    req.write_text("# the app\nnumpy==1.24.3\nscipy==1.10.1\n")
    records = real_cells.venv_sweep()
    code, text = hook.check([req], records, REG, base="py311")
    assert code == EXIT_OK, text
    assert "installed together" in text and "baseline" not in text
    git(tmp_path, "add", "requirements.txt")
    git(tmp_path, "commit", "-qm", "v1")
    req.write_text("# the app\nnumpy==2.2.6\nscipy==1.11.4\n")
    code, text = hook.check([req], records, REG, base="py311")
    assert code == EXIT_FAILED, text
    assert "baseline: the last committed version (git HEAD)" in text
    assert f"{req}:3: error: numpy 2.2.6 + scipy 1.11.4, installed together" in text
    assert "fails on py311: resolve-conflict" in text
    assert "not carried forward from the baseline" in text
    req.write_text("numpy==2.2.6\nscipy==1.14.1\n")
    code, text = hook.check([req], records, REG, base="py311")
    assert code == EXIT_OK, text


def test_a_dockerfile_against_its_committed_version(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    for f in real_cells.DOCKERFILES.glob("requirements*.txt"):
        shutil.copy(f, tmp_path / f.name)
    d = tmp_path / "Dockerfile"
    shutil.copy(real_cells.DOCKERFILES / "Dockerfile.v74.3", d)
    git(tmp_path, "add", "Dockerfile")
    git(tmp_path, "commit", "-qm", "v74.3")
    shutil.copy(real_cells.DOCKERFILES / "Dockerfile.v76", d)
    code, text = hook.check([d], [], REG)
    assert code == EXIT_FAILED and "not carried forward" in text
    missing = tmp_path / "requirements-gone.txt"
    code, text = hook.check([d, missing], [], REG)
    assert code == EXIT_CONFIG and "requirements-gone.txt" in text and "not carried forward" in text


def test_the_precommit_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no results/, no registry/ here: nothing to hold the files to, and no error
    assert cli.main(["precommit"]) == EXIT_OK
    (tmp_path / "requirements.txt").write_text("numpy==2.2.6\nscipy==1.11.4\n")
    assert cli.main(["precommit", "requirements.txt"]) == EXIT_OK
    assert "no results to check the pins against" in capsys.readouterr().out
    (tmp_path / "results").mkdir()
    shutil.copy(real_cells.VENV_SWEEP, tmp_path / "results" / "records.jsonl")
    assert cli.main(["precommit", "requirements.txt", "--base", "py311"]) == EXIT_FAILED
    assert "resolve-conflict" in capsys.readouterr().out
    (tmp_path / "requirements.txt").write_bytes(b"\xff\xfe numpy")
    assert cli.main(["precommit", "requirements.txt"]) == EXIT_CONFIG
    assert cli.main(["precommit", "requirements.txt", "--registry", "nowhere.yaml"]) == EXIT_CONFIG
