"""GPU cells without a GPU: the `gpus:` key, the engine's device requests, telling a machine without
GPUs (infra) from a verdict, and naming each CUDA failure from real text."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from matrix import gpus, probing, registry, spec
from matrix.backends import engine
from matrix.backends.venv import VenvBackend
from matrix.cells import Cell
from matrix.classify import classify_probe, classify_probes
from matrix.errors import EXIT_CONFIG, ConfigError
from matrix.store import Outcome
from matrix.sweep import sweep

REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"


def load(tmp_path: Path, gpus_line: str) -> spec.Spec:
    p = tmp_path / "matrix.yaml"
    p.write_text(textwrap.dedent(f"""
        bases:
          gpu: {{image: "compat-matrix-test/bookworm-py311:local", python: "3.11", {gpus_line}}}
        packages: {{numpy: ["2.2.6"]}}
    """))
    return spec.load(p)


@pytest.mark.parametrize(("written", "canonical"), [
    ("gpus: all", "all"), ("gpus: 2", "count:2"), ('gpus: ["0", "1"]', "device:0,1"), ("gpus: [0, 1]", "device:0,1"),
    ('gpus: ["1"]', "device:1"), ('gpus: ["GPU-8a4b2c1d-0000-1111-2222-333344445555"]',
                                  "device:GPU-8a4b2c1d-0000-1111-2222-333344445555"),
])
def test_gpus_values_read_from_a_matrix_file(tmp_path: Path, written: str, canonical: str) -> None:
    assert load(tmp_path, written).base("gpu").gpus == canonical


def test_a_base_without_gpus_asks_for_none(tmp_path: Path) -> None:
    p = tmp_path / "matrix.yaml"
    p.write_text('bases: {cpu: {image: "python:3.11"}}\npackages: {numpy: ["2.2.6"]}\n')
    assert spec.load(p).base("cpu").gpus is None


@pytest.mark.parametrize(("written", "problem"), [
    ("gpus: 0", "a count of GPUs must be 1 to 64, got 0"),
    ("gpus: -1", "a count of GPUs must be 1 to 64, got -1"),
    ("gpus: 65", "a count of GPUs must be 1 to 64, got 65"),
    ("gpus: true", "got true"),
    ("gpus: some", "'some' is not all, a count or a list of device ids"),
    ("gpus: ALL", "'ALL' is not all"),
    ("gpus: 1.5", "got float"),
    ("gpus: []", "is an empty list of device ids"),
    ('gpus: ["0", "0"]', "device '0' is listed twice"),
    ('gpus: ["0; rm -rf /"]', "is not a device id"),
    ("gpus: [[0]]", "is not a device id"),
    ("gpus: {count: 1}", "got dict"),
    ("gpus: null", "got NoneType"),
])
def test_bad_gpus_are_exit_2_naming_the_key_and_the_fix(tmp_path: Path, written: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, written)
    e = info.value
    assert e.exit_code == EXIT_CONFIG and e.key == "bases.gpu.gpus" and problem in e.problem
    assert str(tmp_path / "matrix.yaml") in str(e) and e.fix


def test_device_requests_are_what_docker_run_gpus_sends() -> None:
    # docker run --gpus all / --gpus 2 / --gpus '"device=0,1"': the SDK's DeviceRequest, as the API gets it.
    assert [dict(r) for r in engine.device_requests("all")] == [
        {"Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
    assert [dict(r) for r in engine.device_requests("count:2")] == [
        {"Driver": "nvidia", "Count": 2, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
    assert [dict(r) for r in engine.device_requests("device:0,1")] == [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "1"], "Capabilities": [["gpu"]], "Options": {}}]


def test_cuda_visible_devices_for_the_venv_backend() -> None:
    assert gpus.visible_devices("all") is None
    assert gpus.visible_devices("count:2") == "0,1"
    assert gpus.visible_devices("device:3,1") == "3,1"
    assert gpus.describe("device:3,1") == '["3", "1"]' and gpus.describe("count:2") == "2"


def test_the_engines_refusal_of_gpus_is_recognised() -> None:
    # This machine's Docker 20.10 without the NVIDIA runtime, through the API and the CLI:
    assert gpus.engine_has_no_gpu('500 Server Error for http+docker://localhost/v1.41/containers/1706/start: '
                                  'Internal Server Error ("could not select device driver "nvidia" with '
                                  'capabilities: [[gpu]]")')
    assert gpus.engine_has_no_gpu('docker: Error response from daemon: could not select device driver "" with '
                                  "capabilities: [[gpu]].")
    # The toolkit present, the driver not (NVIDIA/nvidia-docker#1225):
    assert gpus.engine_has_no_gpu("OCI runtime create failed: container_linux.go:349: starting container process "
                                  "caused \"process_linux.go:449: container init caused \\\"process_linux.go:432: "
                                  "running prestart hook 0 caused \\\\\\\"error running hook: exit status 1, "
                                  "stdout: , stderr: nvidia-container-cli: initialization error: nvml error: "
                                  "driver not loaded")
    assert not gpus.engine_has_no_gpu("No such image: compat-matrix-base:0123")


def test_a_host_driver_is_its_proc_entry_or_nvidia_smi(tmp_path: Path) -> None:
    assert not gpus.host_has_driver(tmp_path, lambda name: None)
    assert gpus.host_has_driver(tmp_path, lambda name: "/usr/bin/nvidia-smi")
    (tmp_path / "driver" / "nvidia").mkdir(parents=True)
    (tmp_path / "driver" / "nvidia" / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module 535\n")
    assert gpus.host_has_driver(tmp_path, lambda name: None)


def test_the_probes_are_told_the_gpus_only_when_asked() -> None:
    cell = Cell("gpu", "together", (("torch", "2.13.0"),))
    assert probing.environment(cell, "n", 10.0, gpus="all")["COMPAT_MATRIX_GPUS"] == "all"
    assert "COMPAT_MATRIX_GPUS" not in probing.environment(cell, "n", 10.0)


def test_a_venv_cell_asking_for_gpus_on_a_host_without_a_driver_is_infra_never_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if gpus.host_has_driver():
        pytest.skip("this host has an NVIDIA driver: the no-driver path cannot be shown here")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    s = load(tmp_path, "gpus: all")
    backend = VenvBackend(s, "20260101T000000Z-9a9a9a")
    slept: list[float] = []
    cells = (Cell("gpu", "together", (("numpy", "2.2.6"),)),)
    try:
        result = sweep(cells, backend, tmp_path / "results", backend.run_id, echo=lambda _: None,
                       retry_waits=(10.0, 60.0), sleep=slept.append)
    finally:
        backend.close(interrupted=False)
    [record] = result.records
    assert record.outcome is Outcome.INFRA_ERROR and record.error.startswith(gpus.NO_GPU_HOST)
    assert "asks for gpus: all" in record.error
    assert slept == []  # waiting does not give a machine a GPU
    assert not (tmp_path / "results" / "logs" / cells[0].id / "install.log").exists()  # nothing installed


def rec(error: str, probe: str = "cuda") -> dict[str, object]:
    return {"probe": probe, "returncode": 0, "signal": None, "timed_out": False,
            "stderr_tail": "", "result": {"status": "fail", "error": error, "warnings": []}}


# Real texts, from the public reports matrix/classify.py cites.
@pytest.mark.parametrize(("error", "meaning", "issue"), [
    ("matmul: RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version",
     "CUDA driver older than the CUDA runtime", "cuda_driver_older_than_runtime"),
    ("available: CpuFallback: torch.cuda.is_available() is False in a cell that asks for GPUs (torch 2.1.2+cu121, "
     "CUDA 12.1); torch.cuda.init(): RuntimeError: The NVIDIA driver on your system is too old (found version "
     "11040). Please update your GPU driver by downloading and installing a new version from the URL: "
     "http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org to install a PyTorch "
     "version that has been compiled with your version of the CUDA driver.",
     "CUDA driver older than the CUDA runtime", "cuda_driver_older_than_runtime"),
    ("matmul: RuntimeError: CUDA error: no kernel image is available for execution on the device\nCUDA kernel "
     "errors might be asynchronously reported at some other API call, so the stacktrace below might be incorrect.",
     "this torch build has no kernels", "cuda_no_kernel_image"),
    ("arch: NoKernelImage: this torch build carries no kernel for device 0 (NVIDIA GeForce RTX 5090, sm_120): no "
     "kernel image is available for execution on the device (the build has sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 "
     "sm_90)", "this torch build has no kernels", "cuda_no_kernel_image"),
    ("import torch: ImportError: libcudnn.so.8: cannot open shared object file: No such file or directory",
     "cuDNN missing or mismatched", "cudnn_missing_or_mismatched"),
    ("import torch: ImportError: libcudnn-a2b758a6.so.7.0.3: cannot open shared object file: No such file or "
     "directory", "cuDNN missing or mismatched", "cudnn_missing_or_mismatched"),
    ("import torch: ImportError: /usr/local/lib/python3.12/site-packages/torch/lib/libtorch_cuda.so: undefined "
     "symbol: ncclCommRegister", "NCCL mismatch", "nccl_mismatch"),
    ("import torch: ImportError: /home/runner/.local/lib/python3.10/site-packages/torch/lib/libtorch_cuda.so: "
     "undefined symbol: ncclMemFree", "NCCL mismatch", "nccl_mismatch"),
    ("build: CpuFallback: torch.cuda.is_available() is False: torch 2.13.0+cpu is a CPU-only build "
     "(torch.version.cuda is None) in a cell that asks for GPUs", "torch falls back to CPU", "torch_cpu_fallback"),
])
def test_each_cuda_failure_is_a_verdict_with_its_meaning_and_a_registry_entry(
        error: str, meaning: str, issue: str) -> None:
    v = classify_probe(rec(error))
    assert v.outcome is Outcome.IMPORT_ERROR
    assert v.error.startswith(meaning) and error.splitlines()[0] in v.error
    found = registry.load(REPO_REGISTRY).match(v.error)
    assert found is not None and found.name == issue


def test_an_import_that_dies_on_a_cuda_library_is_named_too() -> None:
    r = {"probe": "imports", "returncode": 1, "signal": None, "timed_out": False, "result": None,
         "stderr_tail": "Traceback (most recent call last):\nImportError: libcudnn_cnn_infer.so.8: cannot open "
                        "shared object file: No such file or directory\n"}
    v = classify_probe(r)
    assert v.outcome is Outcome.IMPORT_ERROR and v.error.startswith("cuDNN missing or mismatched: imports:")


def test_no_driver_in_the_cell_is_infra_never_cpu_fallback_and_outranks_every_verdict() -> None:
    no_driver = rec("driver: NoNvidiaDriver: gpus all were asked for, but the cell sees no NVIDIA driver")
    v = classify_probe(no_driver)
    assert v.outcome is Outcome.INFRA_ERROR and v.error.startswith(gpus.NO_GPU)
    assert "falls back" not in v.error
    crashed = {"probe": "numeric", "returncode": -11, "signal": 11, "timed_out": False, "result": None}
    assert classify_probes([crashed, no_driver]).outcome is Outcome.INFRA_ERROR


def test_other_failures_keep_their_plain_words() -> None:
    v = classify_probe(rec("scipy.linalg: ValueError: numpy.dtype size changed", probe="imports"))
    assert v.error == "imports: scipy.linalg: ValueError: numpy.dtype size changed"
