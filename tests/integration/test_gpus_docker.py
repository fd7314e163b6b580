"""GPU cells on the real engine of a machine without GPUs (Docker without the NVIDIA runtime): every
cell of a base with `gpus:` is infra-error saying so, exit 3, nothing cached, nothing installed;
the same matrix without `gpus:` gets its CPU verdicts as before. (benchmarks/gpu_check.sh proves
the rest on a machine with a GPU.)"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matrix.backends.engine import RUN_LABEL, DockerEngine, EngineFault
from matrix.gpus import NO_GPU
from tests.bounded import bounded

MATRIX = """\
bases:
  bookworm-py311: {{image: "{base}", python: "3.11"{gpus}}}
packages:
  numpy: ["1.26.4", "2.2.6"]
limits: {{timeout_s: 120, memory: 1g}}
"""
CELLS = {"bookworm-py311-numpy1.26.4-together", "bookworm-py311-numpy2.2.6-together"}


@pytest.fixture(scope="module", autouse=True)
def no_gpu_engine(engine: DockerEngine) -> None:
    runtimes = engine.client.info().get("Runtimes") or {}
    if "nvidia" in runtimes:
        pytest.skip("this engine has the NVIDIA runtime: run benchmarks/gpu_check.sh here instead")


def run(tmp_path: Path, name: str, base: str, gpus: str) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    config, results, cache = tmp_path / f"{name}.yaml", tmp_path / f"results-{name}", tmp_path / f"cache-{name}"
    config.write_text(MATRIX.format(base=base, gpus=gpus))
    env = dict(os.environ, COMPAT_MATRIX_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(config), "--results", str(results),
                           "--backend", "docker"], capture_output=True, text=True, timeout=600, env=env)
    return proc, results, cache


def rows(results: Path) -> dict[str, dict[str, str]]:
    with open(results / "matrix.csv", newline="") as f:
        return {r["cell"]: r for r in csv.DictReader(f)}


def cached(cache: Path) -> set[str]:
    return {json.loads(p.read_text())["cell"] for p in (cache / "results").rglob("*.json")}


def test_the_engine_refuses_a_device_request_as_an_engine_fault_saying_no_gpu(
        engine: DockerEngine, base_image: str) -> None:
    for gpus in ("all", "count:1", "device:0"):
        with pytest.raises(EngineFault) as info:
            bounded(120, engine.run, base_image, ["true"], environment={}, labels={RUN_LABEL: "test-gpus"},
                    memory="64m", timeout_s=60, gpus=gpus)
        assert str(info.value).startswith(NO_GPU), info.value
        assert 'could not select device driver "nvidia" with capabilities: [[gpu]]' in str(info.value)
    # Without gpus the same container runs.
    assert engine.run(base_image, ["true"], environment={}, labels={RUN_LABEL: "test-gpus"}, memory="64m",
                      timeout_s=60).exit_code == 0


def test_gpus_on_an_engine_without_them_are_infra_and_without_gpus_the_cpu_verdicts_stand(
        base_image: str, tmp_path: Path) -> None:
    proc, results, cache = run(tmp_path, "gpu", base_image, ", gpus: all")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    got = rows(results)
    assert set(got) == CELLS
    for cell, row in got.items():
        assert row["outcome"] == "infra-error", (cell, row)
        assert row["error"].startswith(NO_GPU) and "asks for gpus: all" in row["error"], row["error"]
        assert "falls back" not in row["error"]
        # Refused before any install: no install log for the cell.
        assert not (results / "logs" / cell / "install.log").exists()
    assert cached(cache) == set()
    assert "again in" not in out  # not retried: waiting gives no machine a GPU
    assert "Traceback" not in out

    proc, results, cache = run(tmp_path, "cpu", base_image, "")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert {cell: r["outcome"] for cell, r in rows(results).items()} == {cell: "pass" for cell in CELLS}
    assert cached(cache) == CELLS
    # The cuda probe ran and skipped (no torch, no gpus asked).
    probes = [json.loads(line) for line in
              (results / "logs" / "bookworm-py311-numpy2.2.6-together" / "probes.jsonl").read_text().splitlines()]
    cuda = next(p for p in probes if p["probe"] == "cuda")
    assert cuda["result"]["status"] == "skip"
