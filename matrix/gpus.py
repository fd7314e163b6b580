"""GPUs a base asks for (`gpus: all | N | ["0", "1"]`): what the value means to each backend, and
how a machine without them is told apart from a verdict.

A cell that asked for GPUs where there are none says nothing about its pins: the tool's world is
missing a part, so it is `infra-error` (never cached, never "falls back to CPU"). Standard library
only; the engine module turns `device_request` into the docker SDK's DeviceRequest.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

# Every such infra error starts with this (the sweep does not retry it: waiting mends nothing).
NO_GPU_MARK = "no GPU on this"
NO_GPU = "no GPU on this engine: install the NVIDIA container toolkit or drop gpus:"
NO_GPU_HOST = ("no GPU on this host: no NVIDIA driver (no /proc/driver/nvidia/version, no nvidia-smi on PATH); "
               "install the driver or drop gpus:")

# What the engine says when it cannot satisfy a device request:
# - no nvidia runtime registered (Docker 20.10 here, `docker run --gpus all` and the API alike):
#   'could not select device driver "nvidia" with capabilities: [[gpu]]' ("" for the CLI's request);
#   also https://github.com/NVIDIA/nvidia-docker/issues/1034
# - the toolkit present but no driver loaded / no device:
#   "nvidia-container-cli: initialization error: nvml error: driver not loaded"
#   (https://github.com/NVIDIA/nvidia-docker/issues/1225), "... device error: 1: unknown device"
#   (https://github.com/NVIDIA/nvidia-container-toolkit/issues/138).
_ENGINE_NO_GPU = re.compile(
    r"could not select device driver \S* with capabilities|"
    r"nvidia-container-cli: (?:initialization error|device error)",
)

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_COUNT = 64


class Invalid(ValueError):
    """A `gpus:` value that means nothing: (problem, fix)."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def parse(value: Any) -> str:
    """The canonical form of a `gpus:` value: "all", "count:N", or "device:" and the ids joined by
    "," ("device:0,1"; GPU UUIDs too): `gpus: 1` and `gpus: ["1"]` are different requests. Raises
    Invalid."""
    fix = 'use gpus: all, a count (gpus: 2) or device ids (gpus: ["0", "1"])'
    if value == "all":
        return "all"
    if isinstance(value, bool):
        raise Invalid(f"expected all, a count or a list of device ids, got {str(value).lower()}", fix)
    if isinstance(value, int):
        if not 1 <= value <= MAX_COUNT:
            raise Invalid(f"a count of GPUs must be 1 to {MAX_COUNT}, got {value}", fix)
        return f"count:{value}"
    if isinstance(value, list):
        if not value:
            raise Invalid("is an empty list of device ids", fix)
        ids: list[str] = []
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
                item = str(item)
            if not isinstance(item, str) or not _DEVICE_ID.match(item):
                raise Invalid(f"{item!r} is not a device id (an index such as \"0\" or a GPU UUID)", fix)
            if item in ids:
                raise Invalid(f"device {item!r} is listed twice", "list each device once")
            ids.append(item)
        return "device:" + ",".join(ids)
    if isinstance(value, str):
        raise Invalid(f"{value!r} is not all, a count or a list of device ids", fix)
    raise Invalid(f"expected all, a count or a list of device ids, got {type(value).__name__}", fix)


def device_request(gpus: str) -> dict[str, Any]:
    """The keyword arguments of the docker SDK's DeviceRequest (what `docker run --gpus` sends)."""
    request: dict[str, Any] = {"driver": "nvidia", "capabilities": [["gpu"]]}
    if gpus == "all":
        request["count"] = -1
    elif gpus.startswith("count:"):
        request["count"] = int(gpus[len("count:"):])
    else:
        request["device_ids"] = gpus[len("device:"):].split(",")
    return request


def visible_devices(gpus: str) -> str | None:
    """CUDA_VISIBLE_DEVICES for a local process; None for all (nothing hidden)."""
    request = device_request(gpus)
    if "device_ids" in request:
        return ",".join(request["device_ids"])
    count = request["count"]
    return None if count < 0 else ",".join(str(i) for i in range(count))


def engine_has_no_gpu(error: str) -> bool:
    """Whether the engine's error is its refusal of the GPUs asked for."""
    return bool(_ENGINE_NO_GPU.search(error))


def host_has_driver(proc: Path = Path("/proc"), which: Any = shutil.which) -> bool:
    """An NVIDIA driver on this machine: its /proc entry, or nvidia-smi on PATH."""
    return (proc / "driver" / "nvidia" / "version").is_file() or which("nvidia-smi") is not None


def describe(gpus: str) -> str:
    """The request as the matrix file wrote it: all, 2, ["0", "1"]."""
    if gpus.startswith("count:"):
        return gpus[len("count:"):]
    if gpus.startswith("device:"):
        return "[" + ", ".join(f'"{i}"' for i in gpus[len("device:"):].split(",")) + "]"
    return gpus


def probe_environment(gpus: str | None) -> dict[str, str]:
    """What the probes are told: the GPUs the base asked for (probes/cuda.py runs only then)."""
    return {"COMPAT_MATRIX_GPUS": gpus} if gpus else {}


__all__ = ["NO_GPU", "NO_GPU_HOST", "NO_GPU_MARK", "Invalid", "describe", "device_request", "engine_has_no_gpu",
           "host_has_driver", "parse", "probe_environment", "visible_devices"]
