"""GPU cells under the venv backend with a real torch (the CPU wheel in $PIP_FIND_LINKS), on a
machine with no GPU. The one stand-in: an `nvidia-smi` on PATH printing a driver's header, so
that the host and the cell seem to have a driver (the venv backend's check and the cuda probe's
both accept it). Everything else is real: uv installs torch, the driver runs the probes, the real
torch says it is a CPU build. Without the stand-in the same cell is infra-error, nothing installed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matrix.gpus import NO_GPU_HOST, host_has_driver

REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"
SMI = """#!/bin/sh
echo "| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |"
"""


@pytest.fixture(scope="module")
def torch_pin() -> str:
    links = os.environ.get("PIP_FIND_LINKS", "")
    wheels = sorted(Path(links).glob("torch-*-cp311-*.whl")) if links and Path(links).is_dir() else []
    if not wheels:  # as test_as_of_world: torch is never downloaded, so without the wheel there is no test
        pytest.skip("no torch cp311 wheel in $PIP_FIND_LINKS here")
    return wheels[-1].name.split("-")[1]


def run(tmp_path: Path, name: str, pin: str, gpus: str, path: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    config, results = tmp_path / f"{name}.yaml", tmp_path / f"results-{name}"
    config.write_text(f"""bases:
  py311: {{python: "3.11", gpus: {gpus}}}
packages:
  torch: ["{pin}"]
  numpy: ["2.2.6"]
install: {{find_links: ["$PIP_FIND_LINKS"]}}
limits: {{timeout_s: 300, memory: 4g}}
""")
    env = dict(os.environ, PATH=path, COMPAT_MATRIX_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(config), "--results", str(results),
                           "--backend", "venv"], capture_output=True, text=True, timeout=600, env=env)
    return proc, results


def the_row(results: Path) -> dict[str, str]:
    with open(results / "matrix.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    return row


def test_a_cpu_build_where_gpus_are_asked_is_the_fallback_verdict_and_no_driver_is_infra(
        torch_pin: str, tmp_path: Path) -> None:
    if host_has_driver():
        pytest.skip("this host has an NVIDIA driver: run benchmarks/gpu_check.sh here instead")
    if "+cpu" not in torch_pin:
        pytest.skip(f"the torch wheel here ({torch_pin}) is not a CPU build")
    # The shipped registry beside the matrix files (a run writes known-good.yaml beside it).
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "known-issues.yaml").write_bytes(REGISTRY.read_bytes())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)

    # No driver: infra-error before anything is installed.
    proc, results = run(tmp_path, "none", torch_pin, "all", os.environ["PATH"])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    row = the_row(results)
    assert row["outcome"] == "infra-error" and row["error"].startswith(NO_GPU_HOST), row
    assert not (results / "logs" / row["cell"] / "install.log").exists()

    # A driver (the stand-in) and gpus: 2: the real CPU torch falls back, a verdict the registry names.
    proc, results = run(tmp_path, "smi", torch_pin, "2", f"{bin_dir}:{os.environ['PATH']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = the_row(results)
    assert row["outcome"] == "import-error", row
    assert row["error"].startswith("torch falls back to CPU: cuda: build: CpuFallback: torch.cuda.is_available() "
                                   f"is False: torch {torch_pin} is a CPU-only build"), row["error"]
    assert row["issue"] == "torch_cpu_fallback"
    probes = [json.loads(line) for line in (results / "logs" / row["cell"] / "probes.jsonl").read_text().splitlines()]
    facts = next(p for p in probes if p["probe"] == "cuda")["result"]["facts"]
    assert facts == {"driver_cuda": "12.2", "cuda_visible_devices": "0,1", "torch": torch_pin, "torch_cuda": None}
    # The other probes ran on the CPU as ever.
    assert {p["probe"]: p["result"]["status"] for p in probes if p["probe"] != "cuda"} == {
        "imports": "pass", "known_issues": "skip", "numeric": "pass", "torch_numpy": "pass"}
