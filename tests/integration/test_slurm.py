"""A real one-node SLURM cluster (.ci/slurm-up.sh: Debian's slurm-wlm and munge): `compat-matrix shards
--slurm 3 --submit` runs a 6-cell venv matrix as an sbatch array and merges it in a job that waits
for the array (afterany): the same table as an unsharded run, cell by cell. A task cancelled with
scancel leaves its cells missing from the merge (exit 3, each listed); that index resubmitted alone
(`sbatch --array=1`) and the merge again: complete. Without a cluster these tests skip here and
fail on CI."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from matrix.backends import interpreters

MATRIX = """
bases:
  py311: {python: "3.11"}
packages:
  numpy: ["1.26.4", "2.2.6"]
  scipy: ["1.11.4", "1.14.1"]
modes: [together, layered]
layered_order: [scipy, numpy]
exclude:
  - {scipy: "1.14.1", mode: layered, reason: "six cells are enough"}
"""
WIDE = "10000"
WAIT_S = 240  # a job that has not ended by then fails the test (the whole array takes ~20 s here)


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (on CI the SLURM tests must run; see .ci/slurm-up.sh)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def slurm() -> None:
    if shutil.which("sbatch") is None:
        _unavailable("no SLURM here (sbatch is not on PATH): run .ci/slurm-up.sh")
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        _unavailable("sinfo did not answer in 20 s: run .ci/slurm-up.sh")
    states = state.stdout.split()
    if state.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        _unavailable(f"no SLURM node is up ({state.stdout.strip() or state.stderr.strip()}): run .ci/slurm-up.sh")
    if interpreters.find("3.11") is None:
        pytest.fail("python3.11 is needed for this test (pyenv has it on our machines)")


def _matrix(tmp_path: Path) -> Path:
    config = tmp_path / "matrix.yaml"
    config.write_text(textwrap.dedent(MATRIX))
    return config


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _submit(config: Path, results: Path, env: dict[str, str], *extra: str) -> tuple[str, str]:
    proc = _cli("shards", "--slurm", "3", "--submit", "--config", str(config), "--results", str(results), *extra,
                env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"submitted array job (\d+) \(3 shards\) and merge job (\d+) \(afterany:\1\)", proc.stdout)
    assert m, proc.stdout
    return m.group(1), m.group(2)


def _states(job: str) -> list[tuple[str, str]]:
    """(JobState, ExitCode) of each task of a job, as slurmctld has them (no accounting database here)."""
    proc = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return re.findall(r"JobState=(\S+).*?ExitCode=(\S+)", proc.stdout)


def _wait(job: str) -> list[tuple[str, str]]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        states = _states(job)
        if states and all(s not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED")
                          for s, _ in states):
            return states
        time.sleep(1)
    subprocess.run(["scancel", job], timeout=30)
    pytest.fail(f"job {job} did not end in {WAIT_S} s: {_states(job)}")


def _table(results: Path) -> list[dict[str, str]]:
    with open(results / "matrix.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "duration_s"} for r in csv.DictReader(f)]


def test_slurm_array_and_merge_job_give_the_unsharded_table(slurm: None, tmp_path: Path) -> None:
    config = _matrix(tmp_path)
    # The shards' verdicts come from running them on the cluster, not from a result cache. uv wraps
    # its messages at the width it guesses (80 columns when its stderr is a pipe, none in a job's
    # output file), and a record's error is the message's first line: one width for both runs.
    env = dict(os.environ, COMPAT_MATRIX_CACHE=str(tmp_path / "cluster-cache"), COLUMNS=WIDE)
    array, merge = _submit(config, tmp_path / "out", env, "--jobs", "1")
    assert _wait(merge) == [("COMPLETED", "0:0")], [p.read_text() for p in (tmp_path / "out.shards").glob("*.out")]
    assert _states(array) and all(s == ("COMPLETED", "0:0") for s in _states(array)), _states(array)
    logs = sorted((tmp_path / "out.shards").glob(f"slurm-{array}_*.out"))
    assert len(logs) == 3
    for k, log in enumerate(logs, start=1):
        assert f"shard {k}/3 from the SLURM job array" in log.read_text(), log.read_text()

    whole = _cli("run", "--config", str(config), "--backend", "venv", "--results", str(tmp_path / "whole"),
                 env=dict(os.environ, COLUMNS=WIDE))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    table = _table(tmp_path / "out")
    assert table == _table(tmp_path / "whole")
    assert len(table) == 6 and {r["outcome"] for r in table} == {"pass", "resolve-conflict", "import-error"}


def test_a_cancelled_task_is_missing_from_the_merge_until_resubmitted(slurm: None, tmp_path: Path) -> None:
    config = _matrix(tmp_path)
    env = dict(os.environ, COMPAT_MATRIX_CACHE=str(tmp_path / "cluster-cache"))
    # --jobs 2 asks 2 CPUs a task: on this 2-CPU node the tasks run one after another, so task 1
    # is still pending when it is cancelled.
    array, merge = _submit(config, tmp_path / "out", env, "--jobs", "2")
    cancel = subprocess.run(["scancel", f"{array}_1"], capture_output=True, text=True, timeout=30)
    assert cancel.returncode == 0, cancel.stderr
    assert _wait(merge) == [("FAILED", "3:0")]
    shown = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True, text=True, timeout=30)
    tasks = dict(re.findall(r"ArrayTaskId=(\S+).*?JobState=(\S+)", shown.stdout))
    # the other two ran; task 1 was cancelled while pending (slurmctld then forgets it, or shows it CANCELLED)
    assert tasks.get("0") == tasks.get("2") == "COMPLETED" and tasks.get("1", "CANCELLED") == "CANCELLED", tasks

    listed = _cli("list", "--config", str(config), "--shard", "2/3")
    missing = listed.stdout.split()
    assert len(missing) == 2
    out = (tmp_path / "out.shards" / f"slurm-merge-{merge}.out").read_text()
    assert "2 of 6 cells have no record" in out, out
    for cell in missing:
        assert cell in out
    assert not (tmp_path / "out" / "matrix.csv").exists()  # nothing was written

    # The cancelled index again, alone: it is still shard 2 of 3; then the merge job again.
    again = subprocess.run(["sbatch", "--parsable", "--array=1", str(tmp_path / "out.shards" / "array.sbatch")],
                           capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 0, again.stderr
    task = again.stdout.strip().split(";")[0]
    remerge = subprocess.run(["sbatch", "--parsable", f"--dependency=afterok:{task}",
                              str(tmp_path / "out.shards" / "merge.sbatch")], capture_output=True, text=True,
                             timeout=60, env=env)
    assert remerge.returncode == 0, remerge.stderr
    assert _wait(task) == [("COMPLETED", "0:0")]
    assert _wait(remerge.stdout.strip().split(";")[0]) == [("COMPLETED", "0:0")]
    table = _table(tmp_path / "out")
    assert len(table) == 6 and "not-run" not in {r["outcome"] for r in table}
    assert sorted(r["cell"] for r in table) == sorted(_cli("list", "--config", str(config)).stdout.split())


def test_a_task_stopped_while_running_keeps_its_finished_cells_and_resumes(slurm: None, tmp_path: Path) -> None:
    """scancel of a running task is the SIGTERM a preemption sends: the shard exits 143 with the cells
    it finished in its ledger, and the same index resubmitted runs only the rest (--resume)."""
    config = _matrix(tmp_path)
    env = dict(os.environ, COMPAT_MATRIX_CACHE=str(tmp_path / "cluster-cache"))
    proc = _cli("shards", "--slurm", "1", "--submit", "--config", str(config), "--results", str(tmp_path / "out"),
                "--jobs", "1", env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    array = re.search(r"submitted array job (\d+)", proc.stdout).group(1)  # type: ignore[union-attr]
    log = tmp_path / "out.shards" / f"slurm-{array}_0.out"
    deadline = time.monotonic() + WAIT_S
    # the first cell finished (its verdict line), the others not yet: stop the task there
    while not (log.is_file() and re.search(r"^\s+pass in ", log.read_text(), re.M)):
        assert time.monotonic() < deadline, "the task never finished a cell"
        time.sleep(0.2)
    assert subprocess.run(["scancel", f"{array}_0"], timeout=30).returncode == 0
    assert _wait(array) == [("CANCELLED", "143:0")], log.read_text()
    shard = tmp_path / "out.shards" / "shard-1"
    kept = (shard / "ledger.jsonl").read_text().splitlines()
    assert 1 <= len(kept) < 6, log.read_text()
    assert "`--resume` runs the rest" in log.read_text()

    again = subprocess.run(["sbatch", "--parsable", "--array=0", str(tmp_path / "out.shards" / "array.sbatch")],
                           capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 0, again.stderr
    task = again.stdout.strip().split(";")[0]
    assert _wait(task) == [("COMPLETED", "0:0")]
    out = (tmp_path / "out.shards" / f"slurm-{task}_0.out").read_text()
    assert f"{6 - len(kept)} cells to run, {len(kept)} kept from the last run" in out, out
    assert len((shard / "ledger.jsonl").read_text().splitlines()) == 6
