"""The command line without an engine: list, reproduce, and bad input (exit 2, nothing touched)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from matrix.cli import main

MATRIX = """
bases: {bookworm-py311: {image: "python:3.11-slim-bookworm"}}
packages: {numpy: ["1.26.4", "2.2.6"], scipy: ["1.11.4"]}
modes: [together, layered]
layered_order: [scipy, numpy]
exclude: [{numpy: "2.2.6", mode: together, reason: "the resolver refuses it"}]
install: {ca_bundle: none}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "matrix.yaml"
    p.write_text(MATRIX)
    return p


def test_list_prints_ids_and_excluded_reasons(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "bookworm-py311-numpy1.26.4-scipy1.11.4-together",
        "bookworm-py311-numpy1.26.4-scipy1.11.4-layered",
        "bookworm-py311-numpy2.2.6-scipy1.11.4-layered",
    ]
    assert "excluded: bookworm-py311-numpy2.2.6-scipy1.11.4-together (the resolver refuses it)" in err


def test_reproduce_prints_the_dockerfile(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell = "bookworm-py311-numpy2.2.6-scipy1.11.4-layered"
    assert main(["reproduce", "--config", str(config), cell, "--write", str(tmp_path / "ctx")]) == 0
    out = capsys.readouterr().out
    assert "FROM python:3.11-slim-bookworm" in out
    assert "--python /opt/compat-matrix/venv/bin/python --only-binary=:all: --no-deps numpy==2.2.6" in out
    assert (tmp_path / "ctx" / "Dockerfile").is_file() and (tmp_path / "ctx" / "probes" / "_driver.py").is_file()


def test_reproduce_unknown_cell_suggests_one(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--config", str(config), "bookworm-py311-numpy2.2.6-scipy1.11.4-layerd"]) == 2
    assert "did you mean bookworm-py311-numpy2.2.6-scipy1.11.4-layered" in capsys.readouterr().err


def test_bad_config_exits_2_before_anything_is_touched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MATRIX.replace('"2.2.6"', '"2.2.6; rm -rf /"', 1))
    results = tmp_path / "results"
    results.mkdir()
    (results / "matrix.csv").write_text("old table\n")
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*")}
    env_host = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = "unix:///nonexistent.sock"  # an engine would not even be asked
    try:
        code = main(["run", "--config", str(bad), "--results", str(results)])
    finally:
        if env_host is None:
            os.environ.pop("DOCKER_HOST")
        else:
            os.environ["DOCKER_HOST"] = env_host
    assert code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "packages.numpy[1]" in err and "fix:" in err
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*")} == before
    assert (results / "matrix.csv").read_text() == "old table\n"


def test_select_matching_nothing_is_bad_input(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--config", str(config), "--select", "jammy-*"]) == 2
    assert "matches no cell" in capsys.readouterr().err


def test_no_engine_is_exit_3_and_results_untouched(config: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    results = tmp_path / "results"
    (tmp_path / "registry").mkdir()
    known = tmp_path / "registry" / "known-issues.yaml"
    known.write_text("# hand-written\n- {issue: a_b, error: 'numpy.dtype size changed', cause: c, solution: s}\n")
    before = known.read_bytes()
    assert main(["run", "--config", str(config), "--results", str(results), "--backend", "docker"]) == 3
    assert "no Docker Engine answered" in capsys.readouterr().err
    assert not results.exists()
    assert known.read_bytes() == before and sorted(p.name for p in known.parent.iterdir()) == ["known-issues.yaml"]


def test_reproduce_an_interpreter_only_cell_prints_the_venv_recipe(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("bases: {py312: {python: '3.12'}}\npackages: {scipy: ['1.11.4'], numpy: ['2.2.6']}\n"
                 "modes: [layered]\n")
    assert main(["reproduce", "--config", str(p), "py312-scipy1.11.4-numpy2.2.6-layered"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "uv venv --python 3.12 cell-venv"
    assert out[2].endswith("--only-binary=:all: scipy==1.11.4")
    assert out[3].endswith("--only-binary=:all: --no-deps numpy==2.2.6")
    assert "_driver.py" in out[4]


def test_shards_prints_a_github_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["shards", "--github", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"shard": ["1/3", "2/3", "3/3"]}


def test_a_bad_shard_is_bad_input(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--config", str(config), "--shard", "3/2"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_clean_removes_what_is_kept_here_and_says_when_no_engine_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    kept = tmp_path / "kept"
    (kept / "results" / "ab").mkdir(parents=True)
    (kept / "results" / "ab" / "x.json").write_text("{}")
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(kept))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    assert main(["clean"]) == 0
    assert not kept.exists()
    assert "no engine to clean" in capsys.readouterr().out


def test_an_unchanged_table_stands_only_while_its_registry_is_older(tmp_path: Path) -> None:
    from matrix import registry
    from matrix import run as pipeline

    results = tmp_path / "results"
    results.mkdir()
    for name in pipeline.TABLE_FILES:
        (results / name).write_text("")
    (results / "matrix.md").write_text("# Compatibility matrix\n\n" + pipeline._STAMP.format(digest="d1") + "\n")
    reg_file = tmp_path / "registry" / "known-issues.yaml"
    reg_file.parent.mkdir()
    reg_file.write_text("[]\n")
    known = registry.load(reg_file)
    os.utime(reg_file, (1, 1))
    assert not pipeline._table_current(results, known, "d1", True)  # no known-good pins written yet
    assert pipeline._table_current(results, known, "d1", False)  # ... which this directory does not feed
    from matrix.registry import knowngood

    knowngood.default_path(known).write_text("")
    assert pipeline._table_current(results, known, "d1", True) and pipeline._table_current(results, None, "d1", True)
    assert not pipeline._table_current(results, None, "d2", True)  # a table of another matrix
    os.utime(reg_file, None)  # the registry was edited after the table was written
    os.utime(results / "records.jsonl", (2, 2))
    assert not pipeline._table_current(results, known, "d1", True)
    (results / "matrix.html").unlink()
    assert not pipeline._table_current(results, None, "d1", True)


def test_a_reader_that_goes_away_ends_no_command_with_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    versions = ", ".join(f'"1.{i}.0"' for i in range(400))
    (tmp_path / "m.yaml").write_text(f"bases: {{b: {{python: '3.11'}}}}\npackages: {{numpy: [{versions}]}}\n")
    done = subprocess.run(f"{sys.executable} -m matrix list --config {tmp_path / 'm.yaml'} | head -1",
                          shell=True, capture_output=True, text=True, timeout=60)
    assert done.stdout == "b-numpy1.0.0-together\n"
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
