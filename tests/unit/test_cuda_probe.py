"""probes/cuda.py's logic, run for real (a subprocess, as the driver runs it) against a fake `torch`
on sys.path: a directory with torch/__init__.py and torch/cuda.py whose GPU behaves as the test
says (FAKE_TORCH), and a fake nvidia-smi printing a real header. The verdict then goes through the
classifier, as a cell's would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from matrix import gpus
from matrix.classify import classify_probe
from matrix.probing import probes_dir
from matrix.store import Outcome

INIT = '''
import json, os
from torch import version, cuda
from torch import _state
__version__ = _state.S["version"]


class Generator:
    def manual_seed(self, seed):
        return self


class Tensor:
    def __init__(self, v, device="cpu"):
        self.v, self.device = v, device
    def to(self, device):
        return Tensor(self.v, device)
    def cpu(self):
        return Tensor(self.v)
    def __matmul__(self, other):
        if self.device == "cuda" and _state.S.get("kernel_error"):
            raise RuntimeError(_state.S["kernel_error"])
        return Tensor(self.v * other.v + (_state.S.get("matmul_error", 0.0) if self.device == "cuda" else 0.0))
    def __sub__(self, other):
        return Tensor(self.v - other.v)
    def abs(self):
        return Tensor(abs(self.v))
    def max(self):
        return self
    def __float__(self):
        return float(self.v)


def rand(*shape, generator=None):
    return Tensor(0.5)


class _F:
    @staticmethod
    def conv2d(x, w):
        if x.device == "cuda" and _state.S.get("conv_error"):
            raise RuntimeError(_state.S["conv_error"])
        return Tensor(x.v * w.v)


class nn:
    functional = _F


class _Cudnn:
    @staticmethod
    def version():
        return _state.S.get("cudnn")
    @staticmethod
    def is_available():
        return _state.S.get("cudnn") is not None


class backends:
    cudnn = _Cudnn
'''

CUDA = '''
from torch import _state
S = _state.S


def is_available():
    return S["available"]


def init():
    if S.get("init_error"):
        raise RuntimeError(S["init_error"])


def device_count():
    return len(S["devices"])


def get_device_name(i):
    return S["devices"][i][0]


def get_device_capability(i):
    return tuple(S["devices"][i][1])


def get_arch_list():
    return list(S["arch_list"])


class nccl:
    @staticmethod
    def version():
        return tuple(S["nccl"])
'''

STATE = 'import json, os\nS = json.loads(os.environ["FAKE_TORCH"])\n'
VERSION = 'from torch import _state\ncuda = _state.S["cuda"]\n'

# `nvidia-smi` on a driver 535 machine (its first lines).
SMI = '''#!/bin/sh
cat <<'EOF'
Mon Nov 30 08:00:00 2026
+---------------------------------------------------------------------------------------+
| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: %s     |
|-----------------------------------------+----------------------+----------------------+
EOF
'''

HEALTHY: dict[str, Any] = {
    "version": "2.4.1+cu121", "cuda": "12.1", "available": True,
    "devices": [["NVIDIA A100-SXM4-80GB", [8, 0]], ["NVIDIA A100-SXM4-80GB", [8, 0]]],
    "arch_list": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"],
    "cudnn": 90100, "nccl": [2, 20, 5], "matmul_error": 0.0,
}


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    torch = tmp_path / "site" / "torch"
    torch.mkdir(parents=True)
    for name, text in (("__init__.py", INIT), ("cuda.py", CUDA), ("_state.py", STATE), ("version.py", VERSION)):
        (torch / name).write_text(textwrap.dedent(text))
    return tmp_path


def probe(tmp: Path, state: dict[str, Any] | None, *, smi: str | None = "12.2", gpus_asked: str | None = "all",
          pins: dict[str, str] | None = None) -> dict[str, Any]:
    """Run probes/cuda.py as the driver would: its result file and the driver's record of it."""
    bin_dir = tmp / ("bin-" + (smi or "none"))
    bin_dir.mkdir(exist_ok=True)
    if smi:
        (bin_dir / "nvidia-smi").write_text(SMI % smi)
        (bin_dir / "nvidia-smi").chmod(0o755)
    result = tmp / "result.json"
    result.unlink(missing_ok=True)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": f"{tmp / 'site'}:{probes_dir()}",
           "COMPAT_MATRIX_PINS": json.dumps(pins if pins is not None else {"torch": "2.4.1+cu121"}),
           "COMPAT_MATRIX_RESULT": str(result), "FAKE_TORCH": json.dumps(state or {})}
    if gpus_asked:
        env["COMPAT_MATRIX_GPUS"] = gpus_asked
    done = subprocess.run([sys.executable, str(probes_dir() / "cuda.py")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    verdict: dict[str, Any] = json.loads(result.read_text())
    return verdict


def record(verdict: dict[str, Any]) -> dict[str, Any]:
    return {"probe": "cuda", "returncode": 0, "signal": None, "timed_out": False, "stderr_tail": "",
            "result": verdict}


def no_driver_here() -> bool:
    return not gpus.host_has_driver() and not os.path.exists("/usr/lib/x86_64-linux-gnu/libcuda.so.1")


def test_a_healthy_gpu_passes_and_says_what_it_saw(fake: Path) -> None:
    v = probe(fake, HEALTHY)
    assert v["status"] == "pass", v
    facts = v["facts"]
    assert facts["driver_cuda"] == "12.2" and facts["torch_cuda"] == "12.1" and facts["torch"] == "2.4.1+cu121"
    assert facts["device_count"] == 2
    assert facts["devices"][0] == {"name": "NVIDIA A100-SXM4-80GB", "capability": "8.0"}
    assert facts["arch_list"][-1] == "sm_90" and facts["cudnn"] == 90100 and facts["nccl"] == "2.20.5"
    assert facts["matmul_max_abs_error"] == 0.0 and facts["conv_max_abs_error"] == 0.0
    assert [c["name"] for c in v["checks"]] == ["driver", "build", "runtime", "available", "devices", "arch",
                                               "matmul", "cudnn", "nccl"]
    assert classify_probe(record(v)).outcome is Outcome.PASS


def test_it_runs_only_when_torch_is_pinned_and_gpus_are_asked(fake: Path) -> None:
    assert probe(fake, HEALTHY, gpus_asked=None)["status"] == "skip"
    assert probe(fake, HEALTHY, pins={"numpy": "2.2.6"})["status"] == "skip"


def test_a_cpu_build_falls_back_to_cpu(fake: Path) -> None:
    v = probe(fake, {**HEALTHY, "version": "2.13.0+cpu", "cuda": None, "available": False})
    assert v["status"] == "fail" and v["error"].startswith("build: CpuFallback: torch.cuda.is_available() is False")
    verdict = classify_probe(record(v))
    assert verdict.outcome is Outcome.IMPORT_ERROR and verdict.error.startswith("torch falls back to CPU: cuda: build:")


def test_a_cuda_that_does_not_start_says_why(fake: Path) -> None:
    too_old = ("The NVIDIA driver on your system is too old (found version 11040). Please update your GPU driver "
               "by downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx")
    v = probe(fake, {**HEALTHY, "available": False, "init_error": too_old})
    assert v["error"].startswith("available: CpuFallback: torch.cuda.is_available() is False")
    assert "torch.cuda.init(): RuntimeError: The NVIDIA driver on your system is too old" in v["error"]
    assert classify_probe(record(v)).error.startswith("CUDA driver older than the CUDA runtime of this torch build")


def test_an_old_driver_for_the_build_is_named_before_anything_runs(fake: Path) -> None:
    v = probe(fake, {**HEALTHY, "cuda": "12.4"}, smi="11.4")
    assert v["error"].startswith("runtime: DriverTooOld: CUDA driver version is insufficient for CUDA runtime "
                                 "version: the driver supports CUDA 11.4, torch 2.4.1+cu121 was built with CUDA 12.4")
    assert classify_probe(record(v)).error.startswith("CUDA driver older than the CUDA runtime")
    # Minor version compatibility: a 12.4 runtime runs on a 12.2 driver.
    assert probe(fake, {**HEALTHY, "cuda": "12.4"}, smi="12.2")["status"] == "pass"


def test_a_device_the_build_has_no_kernel_for(fake: Path) -> None:
    v = probe(fake, {**HEALTHY, "devices": [["NVIDIA GeForce RTX 5090", [12, 0]]]})
    assert v["error"].startswith("arch: NoKernelImage: this torch build carries no kernel for device 0 "
                                 "(NVIDIA GeForce RTX 5090, sm_120)")
    assert classify_probe(record(v)).error.startswith("this torch build has no kernels for the GPU's architecture")
    assert v["facts"]["devices"] == [{"name": "NVIDIA GeForce RTX 5090", "capability": "12.0"}]
    # PTX for an older architecture is compiled by the driver: it runs.
    assert probe(fake, {**HEALTHY, "devices": [["RTX 5090", [12, 0]]],
                        "arch_list": ["sm_80", "sm_90", "compute_90"]})["status"] == "pass"
    # A cubin of the same major and a lower minor runs too (sm_80 on an sm_86 device).
    assert probe(fake, {**HEALTHY, "devices": [["RTX 3090", [8, 6]]], "arch_list": ["sm_80"]})["status"] == "pass"


def test_a_kernel_error_at_run_time_is_named(fake: Path) -> None:
    v = probe(fake, {**HEALTHY, "kernel_error": "CUDA error: no kernel image is available for execution on the device"})
    assert v["error"].startswith("matmul: RuntimeError: CUDA error: no kernel image")
    assert classify_probe(record(v)).error.startswith("this torch build has no kernels")


def test_the_gpu_computing_something_else_fails(fake: Path) -> None:
    v = probe(fake, {**HEALTHY, "matmul_error": 0.75})
    assert v["error"] == "matmul: WrongResult: a 64x64 matmul on the GPU differs from the CPU's by 0.75"
    assert classify_probe(record(v)).outcome is Outcome.IMPORT_ERROR


def test_a_missing_cudnn_is_named(fake: Path) -> None:
    v = probe(fake, {**HEALTHY, "conv_error": "libcudnn_cnn_infer.so.8: cannot open shared object file: "
                                              "No such file or directory"})
    assert v["error"].startswith("cudnn: RuntimeError: libcudnn_cnn_infer.so.8")
    assert classify_probe(record(v)).error.startswith("cuDNN missing or mismatched")


def test_no_devices_despite_a_driver_falls_back(fake: Path) -> None:
    v = probe(fake, {**HEALTHY, "devices": []})
    assert v["error"].startswith("devices: CpuFallback:")
    assert classify_probe(record(v)).error.startswith("torch falls back to CPU")


@pytest.mark.skipif(not no_driver_here(), reason="this machine has an NVIDIA driver")
def test_no_driver_in_the_cell_is_infra_never_cpu_fallback(fake: Path) -> None:
    # A CPU build too: without a driver the cell cannot say whether the pins would have used a GPU.
    v = probe(fake, {**HEALTHY, "cuda": None, "available": False}, smi=None)
    assert v["error"].startswith("driver: NoNvidiaDriver: gpus all were asked for, but the cell sees no NVIDIA driver")
    verdict = classify_probe(record(v))
    assert verdict.outcome is Outcome.INFRA_ERROR and verdict.error.startswith(gpus.NO_GPU)
    assert [c["name"] for c in v["checks"]] == ["driver"]  # it stopped there
