"""Turns installer output and probe records into exactly one outcome per cell.

Works on recorded text and JSON only, so every rule here is unit-tested from real output.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from typing import Any

from matrix.gpus import NO_GPU
from matrix.store import Outcome


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    error: str = ""


# The tool's world failing, not the combination. Checked first: pip prints "No matching
# distribution" when it merely could not reach the index.
_INFRA = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
    r"Name or service not known|Failed to establish a new connection|ProxyError|SSLError|"
    r"CERTIFICATE_VERIFY_FAILED|Read timed out|Connection reset by peer|ConnectionResetError|"
    r"Network is unreachable|Could not fetch URL|toomanyrequests|No space left on device|"
    r"Temporary failure resolving|Could not resolve host|error sending request|dns error|"
    r"failed to fetch|operation timed out|HTTP error 429|Too Many Requests",
    re.IGNORECASE,
)
_NO_WHEEL = re.compile(
    r"No matching distribution found|Could not find a version that satisfies|"  # pip
    r"has no usable wheels|has no wheels with a matching|there is no version of|"  # uv
    r"only has source distributions|is not available for this platform",
)
_CONFLICT = re.compile(
    r"ResolutionImpossible|conflicting dependencies|"  # pip
    r"No solution found when resolving|requirements are unsatisfiable",  # uv
)
# pip lists the clashing requirements under "The conflict is caused by:"; uv explains "Because …".
_CONFLICT_DETAIL = re.compile(r"^\s*(\S+ \S+ depends on .+)$", re.MULTILINE)
_BECAUSE = re.compile(r"^\s*(?:cause: |╰─▶ )?(Because .+)$", re.MULTILINE)
_ERROR_LINE = re.compile(r"^(?:ERROR|error): (.+)$", re.MULTILINE)

# Printed by a probe that still passed, yet announcing the breakage to come.
TROUBLE = re.compile(
    r"compiled using NumPy 1\.x cannot be run in|numpy\.dtype size changed|"
    r"A NumPy version >=[^\n]* is required for this version of SciPy|"
    r"_ARRAY_API not found|binary incompatibility|Failed to initialize NumPy",
)


# The host's file systems failing under the installer (its cache, the venv, a temp dir): uv says
# "<strerror> (os error N)", pip and Python "[Errno N] <strerror>", the engine (Go) the strerror in
# lower case. Never the pins' doing.
_OS_FAULT = re.compile(
    r"Disk quota exceeded|Read-only file system|Input/output error|Permission denied|"
    r"Operation not permitted|Too many open files|Stale file handle|Cannot allocate memory|"
    r"\(os error \d+\)|\[Errno \d+\]",
    re.IGNORECASE,
)
# A build that failed in the package's own code (only where building is allowed at all).
_BUILD = re.compile(
    r"Failed to build `|The build backend returned an error|Failed to (?:download and )?build|"  # uv
    r"subprocess-exited-with-error|did not run successfully|Failed building wheel|"  # pip
    r"Could not build wheels for",
)
# apt, in a base's setup steps: the base's definition names what is not there.
_APT = re.compile(r"^E: (?:Unable to locate package|Package '?\S+'? has no installation candidate)", re.MULTILINE)


def _first_error(log: str) -> str:
    m = _ERROR_LINE.search(log)
    if m:
        return m.group(1).strip()
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return lines[-1] if lines else "the install failed with no output"


def _killed(returncode: int | None) -> str | None:
    """The signal that ended the installer: a negative return code (a local process) or 128 + N
    (a shell's or an engine exec's report of it)."""
    if returncode is None:
        return None
    if returncode < 0:
        return _signal_name(-returncode)
    if 128 < returncode <= 128 + 64:
        return _signal_name(returncode - 128)
    return None


# The head of uv's explanation ("  cause: Because …", or "  ╰─▶ Because …" with colour): the
# sentences after it stand at the column its text starts in.
_CAUSE = re.compile(r"^(\s*(?:cause: |╰─▶ ))\S")


def unwrap(log: str) -> str:
    """uv's explanation as one line a sentence, whatever the terminal's width: uv wraps it at the
    width it finds (80 columns where it finds none, as under a test runner), which would cut a
    conflict's words ("… and you require\n         numpy==2.2.6, …") apart. A line at the text's
    column continues the sentence before it, unless it starts another ("And because …")."""
    out: list[str] = []
    column = 0
    for line in log.splitlines():
        head = _CAUSE.match(line)
        if head:
            column = len(head.group(1))
        elif (column and out and line[:column].strip() == "" and line[column:column + 1].strip()
              and not line[column:].startswith(("And because", "Because"))):
            out[-1] += " " + line[column:].strip()
            continue
        elif line.strip() == "" or not line.startswith(" " * column):
            column = 0
        out.append(line)
    return "\n".join(out) + ("\n" if log.endswith("\n") else "")


def classify_install(log: str, *, returncode: int | None = None, only_binary: bool = True) -> Verdict:
    """The outcome of a failed install step, from the installer's own output and exit status.

    A failure is a verdict only when the installer said something that names the pins: a
    resolver's explanation (resolve-conflict), a missing wheel or release (no-wheel), a build
    that failed in package code (build-error). An installer killed by a signal (the OOM killer),
    one that said nothing, a file system that failed under it, the network: the tool's world,
    `infra-error`. With `only_binary` (wheels only: nothing is built) a failure no rule
    recognises is infra as well; without it, it is taken as the build's (build-error).
    `returncode`: the step's exit status when known (None: not known)."""
    log = unwrap(log)
    code = f" (exit code {returncode})" if returncode is not None else ""
    sig = _killed(returncode)
    if sig:
        return Verdict(Outcome.INFRA_ERROR, f"the installer was killed by {sig}{code}; last said: "
                                            f"{_last_line(log) or 'nothing'}")
    if not log.strip():
        return Verdict(Outcome.INFRA_ERROR, f"the installer failed with no output{code}")
    infra = _INFRA.search(log) or _OS_FAULT.search(log)
    if infra:
        return Verdict(Outcome.INFRA_ERROR, _line_of(log, infra.start()))
    # A missing wheel first: uv reports it as "No solution found" too.
    if _NO_WHEEL.search(log):
        m = re.search(r"No matching distribution found for \S+", log) or _BECAUSE.search(log)
        return Verdict(Outcome.NO_WHEEL, m.group(m.lastindex or 0) if m else _first_error(log))
    if _CONFLICT.search(log):
        because = _BECAUSE.search(log)
        if because:
            return Verdict(Outcome.RESOLVE_CONFLICT, because.group(1).strip())
        error = _first_error(log)
        detail = _CONFLICT_DETAIL.findall(log)
        if detail:
            error += " (" + "; ".join(d.strip() for d in detail) + ")"
        return Verdict(Outcome.RESOLVE_CONFLICT, error)
    if _BUILD.search(log) or _APT.search(log):
        return Verdict(Outcome.BUILD_ERROR, _first_error(log))
    if only_binary:
        return Verdict(Outcome.INFRA_ERROR, f"the installer failed without naming the pins{code}: {_first_error(log)}")
    return Verdict(Outcome.BUILD_ERROR, _first_error(log))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _line_of(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else len(text)].strip()


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# CUDA failures (torch on a GPU), read from any probe's error: the outcome stays the probe's
# (import-error: the pins cannot use the GPU), the error leads with what it means. Real texts:
_CUDA = (
    # cudaErrorInsufficientDriver (35): https://github.com/nagadomi/nunif/issues/702 ("RuntimeError:
    # CUDA error: CUDA driver version is insufficient for CUDA runtime version"),
    # https://github.com/mlcommons/inference/issues/54; torch's own check of the driver:
    # "The NVIDIA driver on your system is too old (found version 11040)"
    # (https://github.com/lllyasviel/Fooocus/issues/1313, https://github.com/RangiLyu/nanodet/issues/216).
    (re.compile(r"CUDA driver version is insufficient for CUDA runtime version|"
                r"The NVIDIA driver on your system is too old"),
     "CUDA driver older than the CUDA runtime of this torch build"),
    # A build without the GPU's architecture: "RuntimeError: CUDA error: no kernel image is available for
    # execution on the device" (https://github.com/facebookresearch/detectron2/issues/235,
    # https://github.com/Comfy-Org/ComfyUI/issues/10326: an RTX 2060 and 2.7.1+cu128); torch warns first
    # "... with CUDA capability sm_120 is not compatible with the current PyTorch installation"
    # (torch/cuda/__init__.py, _check_capability).
    (re.compile(r"no kernel image is available for execution on the device|"
                r"is not compatible with the current PyTorch installation|"
                r"torch build carries no kernel for"),
     "this torch build has no kernels for the GPU's architecture"),
    # "ImportError: libcudnn.so.8: cannot open shared object file: No such file or directory"
    # (https://github.com/pytorch/TensorRT/issues/858; https://github.com/pytorch/pytorch/issues/4494 for
    # a torch wheel's own "libcudnn-a2b758a6.so.7.0.3"); cuDNN's "cuDNN version incompatibility".
    (re.compile(r"libcudnn[\w.-]*: cannot open shared object file|cuDNN version incompatibility"),
     "cuDNN missing or mismatched"),
    # Two NCCLs, torch linked against the newer one: "ImportError: .../libtorch_cuda.so: undefined symbol:
    # ncclCommRegister" (https://github.com/pytorch/pytorch/issues/119932,
    # https://github.com/NVIDIA/nccl/issues/1180), "undefined symbol: ncclMemFree" with nvidia-nccl-cu11
    # and -cu12 both installed (https://github.com/rwth-i6/returnn/issues/1802).
    (re.compile(r"undefined symbol: nccl\w+|libnccl[\w.-]*: cannot open shared object file|NCCL version mismatch"),
     "NCCL mismatch"),
    # probes/cuda.py's own words when a CUDA-less build or a broken CUDA leaves torch on the CPU.
    (re.compile(r"torch\.cuda\.is_available\(\) is False"), "torch falls back to CPU"),
)
# probes/cuda.py when the cell has GPUs asked for but sees no NVIDIA driver at all: the machine's
# doing (a runtime that did not mount the driver), not the pins'.
_CELL_NO_DRIVER = "NoNvidiaDriver:"


def _cuda_meaning(error: str) -> str | None:
    for pattern, meaning in _CUDA:
        if pattern.search(error):
            return meaning
    return None


def classify_probe(record: dict[str, Any]) -> Verdict:
    """One probe's verdict from the driver's record of it."""
    name = record.get("probe", "?")
    result = record.get("result") or {}
    stderr = record.get("stderr_tail") or ""
    if record.get("timed_out"):
        return Verdict(Outcome.TIMEOUT, f"{name}: did not finish within the time limit")
    sig = record.get("signal")
    if sig:
        return Verdict(Outcome.CRASH, f"{name}: killed by {_signal_name(int(sig))}")
    status = result.get("status")
    if status == "fail":
        error = str(result.get("error") or "failed")
        if _CELL_NO_DRIVER in error:
            return Verdict(Outcome.INFRA_ERROR, f"{NO_GPU} ({name}: {error})")
        meaning = _cuda_meaning(error)
        return Verdict(Outcome.IMPORT_ERROR, f"{meaning}: {name}: {error}" if meaning else f"{name}: {error}")
    if status not in ("pass", "skip") or record.get("returncode"):
        # The probe ended without a verdict: an interpreter abort or an exit from package code.
        last = [ln for ln in stderr.splitlines() if ln.strip()]
        why = last[-1].strip() if last else f"exited with code {record.get('returncode')}"
        meaning = _cuda_meaning(why)
        return Verdict(Outcome.IMPORT_ERROR, f"{meaning}: {name}: {why}" if meaning else f"{name}: {why}")
    for text in [stderr, *result.get("warnings", [])]:
        trouble = TROUBLE.search(text)
        if trouble:
            return Verdict(Outcome.WARN, f"{name}: {_line_of(text, trouble.start())}")
    return Verdict(Outcome.PASS)


# When probes disagree, the cell takes the gravest verdict; its error is that probe's.
_SEVERITY = [Outcome.INFRA_ERROR, Outcome.CRASH, Outcome.TIMEOUT, Outcome.IMPORT_ERROR, Outcome.WARN, Outcome.PASS]


def classify_probes(records: list[dict[str, Any]]) -> Verdict:
    if not records:
        return Verdict(Outcome.INFRA_ERROR, "the probe driver reported no probe")
    verdicts = [classify_probe(r) for r in records]
    worst = min(verdicts, key=lambda v: _SEVERITY.index(v.outcome))
    strays = sum(r.get("strays") or 0 for r in records if isinstance(r.get("strays"), int))
    if strays and worst.outcome in (Outcome.PASS, Outcome.WARN):
        note = f"killed {strays} stray process(es) the probes left behind"
        worst = Verdict(worst.outcome, f"{worst.error}; {note}" if worst.error else note)
    return worst
