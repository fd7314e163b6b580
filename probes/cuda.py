"""CUDA under torch, when torch is pinned and the base asks for GPUs (COMPAT_MATRIX_GPUS).

What a GPU image must do: see an NVIDIA driver, carry a CUDA build of torch whose runtime the
driver can run, see the devices, carry kernels for their architecture, compute on them what the
CPU computes, run cuDNN and load NCCL. The first that fails is the probe's error; what was learnt
on the way is in the result's "facts" (device names, torch.version.cuda, the driver's CUDA, the
architectures). Standard library and torch only.

Error words classify.py reads: "NoNvidiaDriver:" (the cell sees no driver at all: the machine's
doing, infra-error, never "falls back to CPU") and "torch.cuda.is_available() is False" (the
pins' doing: a CPU build, or a CUDA that does not start).
"""

import ctypes
import os
import re
import shutil
import subprocess

import _probe

GPUS_VAR = "COMPAT_MATRIX_GPUS"


class NoNvidiaDriver(Exception):
    """GPUs were asked for, yet the cell sees no NVIDIA driver: nothing about the pins."""


class CpuFallback(Exception):
    """GPUs were asked for and are there, yet torch does not use them."""


class DriverTooOld(Exception):
    """The driver's CUDA is older than the CUDA runtime torch was built with."""


class NoKernelImage(Exception):
    """The torch build carries no kernels the device can run."""


class WrongResult(Exception):
    """The device computed something other than the CPU."""


def _version(text):
    """(major, minor) of "12.1", "12.1.105"; None when unreadable."""
    m = re.match(r"^\s*(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def driver_cuda_version(run=subprocess.run, which=shutil.which, cdll=None):
    """The highest CUDA version the driver supports, "12.2", from nvidia-smi's header or the
    driver library's cuDriverGetVersion; None when neither says."""
    smi = which("nvidia-smi")
    if smi:
        try:
            out = run([smi], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                      universal_newlines=True).stdout or ""
        except (OSError, subprocess.SubprocessError):
            out = ""
        m = re.search(r"CUDA Version:\s*(\d+\.\d+)", out)
        if m:
            return m.group(1)
    try:
        lib = (cdll or ctypes.CDLL)("libcuda.so.1")
        value = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(value)) == 0 and value.value > 0:
            return "%d.%d" % (value.value // 1000, (value.value % 1000) // 10)
    except (OSError, AttributeError):
        pass
    return None


def driver_present(proc="/proc", which=shutil.which):
    """An NVIDIA driver in the cell: its /proc entry, nvidia-smi, or the driver library."""
    if os.path.isfile(os.path.join(proc, "driver", "nvidia", "version")) or which("nvidia-smi"):
        return True
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def runtime_runs_on(runtime, driver):
    """Whether a driver supporting CUDA `driver` runs a runtime built for CUDA `runtime` ((major,
    minor) each). From CUDA 11 on, a runtime runs on any driver of its major version (minor version
    compatibility); before, the driver must be at least the runtime's minor too."""
    if runtime[0] >= 11:
        return driver[0] >= runtime[0]
    return driver >= runtime


def arch_supported(capability, arch_list):
    """Whether a build carrying `arch_list` (["sm_80", "sm_90", "compute_90"]) runs on a device of
    `capability` ((8, 6)): a cubin of the same major and a minor not above the device's, or PTX
    (compute_XY) at or below the device's capability, which the driver compiles."""
    major, minor = capability
    for arch in arch_list:
        m = re.match(r"^(sm|compute)_(\d+)(\d)[a-z]?$", arch)
        if not m:
            continue
        a_major, a_minor = int(m.group(2)), int(m.group(3))
        if m.group(1) == "sm" and a_major == major and a_minor <= minor:
            return True
        if m.group(1) == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


class Checks:
    def __init__(self, facts):
        self.facts = facts
        self.torch = None

    def driver(self):
        if not driver_present():
            raise NoNvidiaDriver("gpus %s were asked for, but the cell sees no NVIDIA driver (no "
                                 "/proc/driver/nvidia/version, no nvidia-smi, no libcuda.so.1)"
                                 % os.environ.get(GPUS_VAR))
        self.facts["driver_cuda"] = driver_cuda_version()
        self.facts["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")

    def build(self):
        import torch
        self.torch = torch
        self.facts["torch"] = torch.__version__
        self.facts["torch_cuda"] = torch.version.cuda
        if not torch.version.cuda:
            raise CpuFallback("torch.cuda.is_available() is False: torch %s is a CPU-only build "
                              "(torch.version.cuda is None) in a cell that asks for GPUs"
                              % torch.__version__)

    def runtime(self):
        torch = self.torch
        runtime, driver = _version(torch.version.cuda), _version(self.facts.get("driver_cuda"))
        if runtime and driver and not runtime_runs_on(runtime, driver):
            raise DriverTooOld("CUDA driver version is insufficient for CUDA runtime version: the driver "
                               "supports CUDA %s, torch %s was built with CUDA %s"
                               % (self.facts["driver_cuda"], torch.__version__, torch.version.cuda))

    def available(self):
        torch = self.torch
        if torch.cuda.is_available():
            self.facts["available"] = True
            return
        self.facts["available"] = False
        why = ""
        try:
            torch.cuda.init()  # says why is_available() did not
        except Exception as e:  # noqa: BLE001 - its words are the evidence
            why = "; torch.cuda.init(): %s: %s" % (type(e).__name__, e)
        raise CpuFallback("torch.cuda.is_available() is False in a cell that asks for GPUs (torch %s, CUDA %s)%s"
                          % (torch.__version__, torch.version.cuda, why))

    def devices(self):
        cuda = self.torch.cuda
        count = cuda.device_count()
        self.facts["device_count"] = count
        if count < 1:
            raise CpuFallback("torch.cuda.is_available() is False in effect: torch.cuda.device_count() is 0")
        self.facts["devices"] = [{"name": cuda.get_device_name(i),
                                  "capability": "%d.%d" % tuple(cuda.get_device_capability(i))}
                                 for i in range(count)]

    def arch(self):
        cuda = self.torch.cuda
        archs = list(cuda.get_arch_list())
        self.facts["arch_list"] = archs
        for i in range(self.facts["device_count"]):
            capability = tuple(cuda.get_device_capability(i))
            if not arch_supported(capability, archs):
                raise NoKernelImage("this torch build carries no kernel for device %d (%s, sm_%d%d): "
                                    "no kernel image is available for execution on the device (the build has %s)"
                                    % (i, cuda.get_device_name(i), capability[0], capability[1], " ".join(archs)))

    def matmul(self):
        torch = self.torch
        g = torch.Generator().manual_seed(0)
        a, b = torch.rand(64, 64, generator=g), torch.rand(64, 64, generator=g)
        want = a @ b
        got = (a.to("cuda") @ b.to("cuda")).cpu()
        err = float((got - want).abs().max())
        self.facts["matmul_max_abs_error"] = err
        if not err <= 1e-2:  # NaN fails too; TF32 stays well below it
            raise WrongResult("a 64x64 matmul on the GPU differs from the CPU's by %g" % err)

    def cudnn(self):
        torch = self.torch
        self.facts["cudnn"] = torch.backends.cudnn.version()
        if not torch.backends.cudnn.is_available():
            raise RuntimeError("cuDNN is not available to torch %s (torch.backends.cudnn.is_available() is False)"
                               % torch.__version__)
        g = torch.Generator().manual_seed(1)
        x, w = torch.rand(1, 3, 16, 16, generator=g), torch.rand(4, 3, 3, 3, generator=g)
        want = torch.nn.functional.conv2d(x, w)
        got = torch.nn.functional.conv2d(x.to("cuda"), w.to("cuda")).cpu()
        err = float((got - want).abs().max())
        self.facts["conv_max_abs_error"] = err
        if not err <= 1e-2:
            raise WrongResult("a cuDNN convolution on the GPU differs from the CPU's by %g" % err)

    def nccl(self):
        nccl = getattr(self.torch.cuda, "nccl", None)
        if nccl is None:
            raise _probe.Skip("torch.cuda.nccl is absent from this build")
        version = nccl.version()
        self.facts["nccl"] = ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)


def main():
    pins = _probe.pins()
    facts = {}
    if "torch" not in pins or not os.environ.get(GPUS_VAR):
        _probe.run([], facts)
        return
    c = Checks(facts)
    checks = [("driver", c.driver), ("build", c.build), ("runtime", c.runtime), ("available", c.available),
              ("devices", c.devices), ("arch", c.arch), ("matmul", c.matmul), ("cudnn", c.cudnn),
              ("nccl", c.nccl)]
    _probe.run(checks, facts, stop_at_first=True)


if __name__ == "__main__":
    main()
