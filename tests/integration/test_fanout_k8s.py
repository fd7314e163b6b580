"""`compat-matrix shards --k8s N`, run as the kubelet would run it, without a cluster: each shard Job's
container command line in N local processes (one per completion index, JOB_COMPLETION_INDEX set and
the container's env given, $(VAR) expanded in the command as the kubelet expands it), then the merge
Job's: the same table as an unsharded run (venv backend, real installs). Not run here: the init
container (it installs compat-matrix into the pod; here it is installed) and the volumes (a local
directory stands for the results volume, the matrix file for the ConfigMap)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from matrix.backends import interpreters

MATRIX = """
bases:
  py311: {image: "python:3.11-slim-bookworm", python: "3.11"}
  py312: {image: "python:3.12-slim-bookworm", python: "3.12"}
packages:
  numpy: ["1.26.4", "2.2.6"]
"""
N = 2


def _kubelet_env(container: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    env.update(overrides)
    # `python3` in the pod's image is this test's interpreter here
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """$(VAR) in a container's command, as the kubelet expands it (unknown names stay as written)."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def _table(path: Path) -> list[dict[str, str]]:
    with open(path / "matrix.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "duration_s"} for r in csv.DictReader(f)]


def test_indexed_jobs_run_locally_merge_to_the_unsharded_table(tmp_path: Path) -> None:
    for v in ("3.11", "3.12"):
        if interpreters.find(v) is None:
            pytest.fail(f"python{v} is needed for this test (pyenv has it on our machines)")
    config = tmp_path / "matrix.yaml"
    config.write_text(textwrap.dedent(MATRIX))
    printed = subprocess.run([sys.executable, "-m", "matrix", "shards", "--k8s", str(N), "--config", str(config)],
                             capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    docs = list(yaml.safe_load_all(printed.stdout))
    jobs = [d for d in docs if d["kind"] == "Job"]
    shard_jobs = [j for j in jobs if j["metadata"]["labels"]["org.compat-matrix.role"] == "shard"]
    [merge_job] = [j for j in jobs if j["metadata"]["labels"]["org.compat-matrix.role"] == "merge"]
    assert len(shard_jobs) == 2

    volume = tmp_path / "volume"
    # the shards' verdicts come from running them, not from the unsharded run's result cache
    overrides = {"COMPAT_MATRIX_CONFIG": str(config), "COMPAT_MATRIX_RESULTS": str(volume),
                 "COMPAT_MATRIX_CACHE": str(tmp_path / "pods-cache")}
    procs = []
    for job in shard_jobs:
        [container] = job["spec"]["template"]["spec"]["containers"]
        for index in range(job["spec"]["completions"]):
            env = _kubelet_env(container, {**overrides, "JOB_COMPLETION_INDEX": str(index)})
            procs.append((job["metadata"]["name"], index, subprocess.Popen(
                _expand(container["command"], env), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True)))
    try:
        for name, index, p in procs:
            out, _ = p.communicate(timeout=600)
            assert p.returncode == 0, f"{name} index {index}:\n{out}"
            assert f"shard {index + 1}/{N} from the Kubernetes Indexed Job" in out
    finally:
        for _, _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    [container] = merge_job["spec"]["template"]["spec"]["containers"]
    env = _kubelet_env(container, overrides)
    merged = subprocess.run(_expand(container["command"], env), env=env, capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stdout + merged.stderr

    whole = subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(config), "--backend", "venv",
                            "--results", str(tmp_path / "whole")], capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    table = _table(volume / "table")
    assert table == _table(tmp_path / "whole")
    assert len(table) == 4 and {r["outcome"] for r in table} == {"pass"}, table
