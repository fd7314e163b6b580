"""Beyond one machine, without a cluster: --shard auto from every engine's variables (and exit 2 when
none gives a shard), the {index} placeholder, the sbatch scripts, and the Kubernetes manifests checked
against the official client's own models (deserialised and serialised again without loss)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from matrix import cells, fanout, spec
from matrix.cli import main
from matrix.errors import ConfigError

MATRIX = """
bases:
  py311: {image: "python:3.11-slim-bookworm", python: "3.11"}
  py312: {image: "python:3.12-slim-bookworm", python: "3.12"}
  local: {python: "3.11"}
packages: {numpy: ["1.26.4", "2.2.6"], scipy: ["1.11.4"]}
modes: [together, layered]
layered_order: [scipy, numpy]
exclude: [{base: py312, mode: layered, reason: "fewer"}]
install: {ca_bundle: none}
"""

ENGINES = [
    # (environment, expected shard, words the source names)
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3",
      "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4), "SLURM"),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "7"}, (1, 3), "SLURM"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (4, 4), "SLURM"),
    # compat-matrix's own array resubmitted for one index keeps its place among N
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "1",
      "SLURM_ARRAY_TASK_COUNT": "1", "COMPAT_MATRIX_SHARDS": "3"}, (2, 3), "SLURM"),
    ({"JOB_COMPLETION_INDEX": "0", "COMPAT_MATRIX_SHARDS": "5"}, (1, 5), "Kubernetes"),
    ({"JOB_COMPLETION_INDEX": "4", "COMPAT_MATRIX_SHARDS": "5"}, (5, 5), "Kubernetes"),
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "2"}, (1, 2), "GitLab"),
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"}, (2, 2), "GitLab"),
    ({"BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "3"}, (1, 3), "Buildkite"),
    ({"BUILDKITE_PARALLEL_JOB": "2", "BUILDKITE_PARALLEL_JOB_COUNT": "3"}, (3, 3), "Buildkite"),
]


@pytest.mark.parametrize(("env", "expected", "engine"), ENGINES)
def test_shard_auto_reads_each_engine(env: dict[str, str], expected: tuple[int, int], engine: str) -> None:
    got = fanout.auto_shard(env)
    assert (got.k, got.n) == expected
    assert got.source is not None and engine in got.source


@pytest.mark.parametrize("env", [
    {},  # no engine at all
    {"JOB_COMPLETION_INDEX": "1"},  # an Indexed Job without the count
    {"SLURM_ARRAY_TASK_ID": "1"},  # a task id without its array
    {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "8",
     "SLURM_ARRAY_TASK_COUNT": "3"},  # a stepped array: indices not consecutive
    {"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "2"},  # index beyond the count
    {"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "2"},  # GitLab counts from 1
    {"BUILDKITE_PARALLEL_JOB": "x", "BUILDKITE_PARALLEL_JOB_COUNT": "2"},
    {"JOB_COMPLETION_INDEX": "0", "COMPAT_MATRIX_SHARDS": "0"},
])
def test_shard_auto_without_a_usable_engine_is_bad_input(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as e:
        fanout.auto_shard(env)
    assert e.value.exit_code == 2


def test_no_engine_names_every_variable_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "CI_NODE_INDEX", "BUILDKITE_PARALLEL_JOB"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    assert main(["list", "--config", str(tmp_path / "matrix.yaml"), "--shard", "auto"]) == 2
    err = capsys.readouterr().err
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX", "COMPAT_MATRIX_SHARDS",
                 "CI_NODE_INDEX", "CI_NODE_TOTAL", "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT"):
        assert name in err
    assert "Traceback" not in err


def test_list_with_shard_auto_is_the_shard_given_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "matrix.yaml"
    config.write_text(MATRIX)
    assert main(["list", "--config", str(config), "--shard", "2/3"]) == 0
    by_hand = capsys.readouterr().out
    monkeypatch.setenv("CI_NODE_INDEX", "2")
    monkeypatch.setenv("CI_NODE_TOTAL", "3")
    assert main(["list", "--config", str(config), "--shard", "auto"]) == 0
    out, err = capsys.readouterr()
    assert out == by_hand and out.strip()
    assert "shard 2/3 from the GitLab parallel" in err


def test_results_placeholder() -> None:
    part = fanout.Shard(2, 4)
    assert fanout.expand_results(Path("out/shard-{index}-of-{count}"), part, "m") == Path("out/shard-2-of-4")
    assert fanout.expand_results(Path("out/plain"), None, "m") == Path("out/plain")
    with pytest.raises(ConfigError, match="--results"):
        fanout.expand_results(Path("out/shard-{index}"), None, "m")


def test_sbatch_scripts_run_each_shard_and_merge_after_the_array(tmp_path: Path) -> None:
    config = tmp_path / "matrix.yaml"
    config.write_text(MATRIX)
    f = fanout.Fanout(config, 3, tmp_path / "out", jobs=4)
    array, merge = fanout.slurm_scripts(f)
    assert "#SBATCH --array=0-2\n" in array and "#SBATCH --cpus-per-task=4\n" in array
    assert "export COMPAT_MATRIX_SHARDS=3\n" in array
    run_line = array.splitlines()[-1].split()
    assert run_line[:2] == ["exec", run_line[1]] and "--shard" in run_line
    assert run_line[run_line.index("--shard") + 1] == "auto"
    assert run_line[run_line.index("--backend") + 1] == "venv" and "--resume" in run_line
    assert f"'{tmp_path}/out.shards/shard-{{index}}'" in array
    merge_line = merge.splitlines()[-1].split()
    assert merge_line[-3:] == [f"{tmp_path}/out.shards/shard-{k}" for k in (1, 2, 3)]
    script = fanout.slurm_submit_script(f)
    assert "--dependency=afterany:${array%%;*}" in script
    # the printed submit script is valid bash
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, timeout=10)
    assert check.returncode == 0, check.stderr


def test_more_shards_than_cells_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "matrix.yaml"
    config.write_text(MATRIX)
    assert main(["shards", "--slurm", "99", "--config", str(config)]) == 2
    assert "at most 10" in capsys.readouterr().err


def test_submit_without_slurm_is_infra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "matrix.yaml"
    config.write_text(MATRIX)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert main(["shards", "--slurm", "2", "--submit", "--config", str(config),
                 "--results", str(tmp_path / "r")]) == 3
    assert "sbatch is not on PATH" in capsys.readouterr().err


def _manifests(tmp_path: Path, n: int, text: str = MATRIX) -> tuple[list[dict[str, Any]], str]:
    config = tmp_path / "matrix.yaml"
    config.write_text(text)
    f = fanout.Fanout(config, n)
    docs, notes = fanout.k8s_manifests(f, spec.load(config), text)
    out = fanout.k8s_yaml(docs, notes, f)
    return list(yaml.safe_load_all(out)), out


def test_k8s_manifests_load_into_the_official_models_without_loss(tmp_path: Path) -> None:
    from kubernetes import client

    docs, text = _manifests(tmp_path, 3)
    api = client.ApiClient()
    kinds = {"Job": "V1Job", "ConfigMap": "V1ConfigMap", "PersistentVolumeClaim": "V1PersistentVolumeClaim"}
    for doc in docs:
        model = api._ApiClient__deserialize(doc, kinds[doc["kind"]])  # type: ignore[attr-defined]
        assert api.sanitize_for_serialization(model) == doc, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["org.compat-matrix.run"]
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    # one Job per base image (not the interpreter-only base, which the header says), and the merge
    assert {n for n in jobs if not n.startswith("compat-matrix-merge-")} == {"compat-matrix-py311",
                                                                            "compat-matrix-py312"}
    assert len(jobs) == 3
    shard_jobs = [j for j in jobs.values() if j["metadata"]["labels"]["org.compat-matrix.role"] == "shard"]
    assert sorted(j["spec"]["template"]["spec"]["containers"][0]["image"] for j in shard_jobs) == [
        "python:3.11-slim-bookworm", "python:3.12-slim-bookworm"]
    assert "base local names no image" in text
    py311 = jobs["compat-matrix-py311"]["spec"]
    assert py311["completionMode"] == "Indexed" and py311["completions"] == 3 and py311["parallelism"] == 3
    assert py311["backoffLimitPerIndex"] >= 1
    rules = {r["action"]: r for r in py311["podFailurePolicy"]["rules"]}
    assert rules["FailIndex"]["onExitCodes"]["values"] == [2]
    assert 3 in rules["Count"]["onExitCodes"]["values"]
    assert py311["template"]["spec"]["restartPolicy"] == "Never"
    shard = py311["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in shard["env"]}
    assert env["COMPAT_MATRIX_SHARDS"] == "3"
    assert shard["command"][shard["command"].index("--backend") + 1] == "venv"
    assert shard["command"][shard["command"].index("--shard") + 1] == "auto"
    # py312 has 2 cells: 2 shards, none empty
    assert jobs["compat-matrix-py312"]["spec"]["completions"] == 2
    merge = next(j for j in jobs.values() if j["metadata"]["labels"]["org.compat-matrix.role"] == "merge")
    merge_cmd = merge["spec"]["template"]["spec"]["containers"][0]["command"]
    assert sum(a.startswith("$(COMPAT_MATRIX_RESULTS)/shards/") for a in merge_cmd) == 5
    assert "--allow-partial" in merge_cmd  # the interpreter-only base's cells cannot be there


def test_k8s_refuses_credentials_and_bases_without_python(tmp_path: Path) -> None:
    secret = MATRIX.replace("install: {ca_bundle: none}",
                            "install: {ca_bundle: none, index_url: 'https://u:S3CRET@example.org/simple'}")
    with pytest.raises(ConfigError) as e:
        _manifests(tmp_path, 2, secret)
    assert "S3CRET" not in str(e.value) and "credentials" in str(e.value)
    no_python = textwrap.dedent("""
        bases: {slim: {image: "python:3.11-slim-bookworm"}}
        packages: {numpy: ["1.26.4"]}
        install: {ca_bundle: none}
        """)
    with pytest.raises(ConfigError, match="python"):
        _manifests(tmp_path, 1, no_python)


def test_every_k8s_shard_together_is_every_cell_of_its_base(tmp_path: Path) -> None:
    docs, _ = _manifests(tmp_path, 3)
    plan = cells.plan(spec.load(tmp_path / "matrix.yaml"))
    for job in (d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"]["org.compat-matrix.role"] == "shard"):
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        pattern = command[command.index("--select") + 1]
        mine = cells.select(plan.cells, [pattern])
        n = job["spec"]["completions"]
        got = [c.id for k in range(1, n + 1) for c in cells.shard(mine, k, n)]
        assert sorted(got) == sorted(c.id for c in mine) and all(cells.shard(mine, k, n) for k in range(1, n + 1))


def test_merge_counts_a_shard_that_never_ran_as_missing_cells(tmp_path: Path) -> None:
    """A cancelled array task leaves no directory: its cells are missing (exit 3, listed), not bad input;
    only when no directory holds any record is the merge given the wrong directories (exit 2)."""
    import dataclasses

    from matrix import run as pipeline
    from matrix.errors import EXIT_INFRA
    from tests.unit.test_ledger import _merge_setup, _shard

    s, ids, options = _merge_setup(tmp_path)
    dirs = [_shard(tmp_path / "s1", s, ids[:2]), tmp_path / "s2-never-ran"]
    result = pipeline.merge(options, dirs, echo=lambda _: None)
    assert result.status == EXIT_INFRA
    assert all(i in result.problems[0] for i in ids[2:]) and "s2-never-ran" in result.problems[0]
    assert not options.results.exists()
    with pytest.raises(ConfigError, match="no records in any"):
        pipeline.merge(dataclasses.replace(options), [tmp_path / "a", tmp_path / "b"], echo=lambda _: None)


def test_shards_keep_cells_that_share_pins_together() -> None:
    """48 cells (2 bases x 4 numpy x 3 scipy x 2 modes) over 4 shards: each shard holds one base
    and two numpy versions whole, so a wheel is fetched by one or two shards, not by all four."""
    import itertools

    some = tuple(cells.Cell(base, mode, (("numpy", np), ("scipy", sp))) for base, np, sp, mode in itertools.product(
        ("py311", "py312"), ("1.24.4", "1.26.4", "2.1.3", "2.2.6"), ("1.11.4", "1.13.1", "1.14.1"),
        ("together", "layered")))
    parts = [cells.shard(some, k, 4) for k in range(1, 5)]
    assert [len(p) for p in parts] == [12] * 4
    for p in parts:
        assert len({c.base for c in p}) == 1 and len({c.pin_dict["numpy"] for c in p}) == 2
    downloads = {(k, c.base, name, v) for k, p in enumerate(parts) for c in p for name, v in c.pins}
    wheels = {(c.base, name, v) for c in some for name, v in c.pins}
    assert len(wheels) == 14 and len(downloads) == 20  # round-robin over a hash: 56
