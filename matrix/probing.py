"""The host side of the probes: where the scripts are, what they are told, what they said.

The scripts themselves live in `probes/` (installed as `matrix.probes`) and run inside the cell.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix.cells import Cell
from matrix.classify import Verdict, classify_probes
from matrix.gpus import probe_environment
from matrix.store import Outcome


def probes_dir() -> Path:
    # A source checkout keeps probes/ beside the package; an installed one ships it inside.
    checkout = Path(__file__).resolve().parent.parent / "probes"
    if (checkout / "_driver.py").is_file():
        return checkout
    found = importlib.util.find_spec("matrix.probes")
    if found is None or found.origin is None:
        raise RuntimeError("the probe scripts are missing from this installation of compat-matrix")
    return Path(found.origin).parent


# Scripts beside the probes that are no part of a probe run (the guard runs in users' own images).
_NOT_PROBES = ("__init__.py", "_guard.py")


def probe_files() -> dict[str, Path]:
    """The files a probe run needs: the driver, its helpers and the probes."""
    return {p.name: p for p in sorted(probes_dir().glob("*.py")) if p.name not in _NOT_PROBES}


# Run with the cell's interpreter after its installs: prints the environment's fingerprint.
FINGERPRINT = "_fingerprint.py"


def new_nonce() -> str:
    return secrets.token_hex(16)


def environment(cell: Cell, nonce: str, timeout_s: float,
                issue_probes: tuple[tuple[str, str], ...] = (), *, pycache: str = "/tmp/pycache",
                gpus: str | None = None, also: tuple[str, ...] = ()) -> dict[str, str]:
    """What the driver is told: the cell's pins, the per-probe limit, the nonce, the
    registry's issue-specific checks ((issue, python snippet) pairs), and the GPUs the base asks
    for (`gpus`, matrix.gpus' form: probes/cuda.py runs only then).

    Bytecode goes to `pycache` (a scratch directory of the cell, Python 3.8+): the first probe
    compiles what it imports, the others load it (importing numpy + scipy takes 2.5 s from
    source, 0.9 s from bytecode), and the installed environment is never written to.

    BLAS and OpenMP worker threads are told to sleep when idle instead of spinning: how they wait,
    never how many there are or what they compute. By default OpenBLAS's (numpy's and scipy's
    each) spin for 2^28 cycles after starting, burning a core the next cell needs: two imports of
    numpy + scipy side by side on 2 cores took 1.3× as long as one after the other; with
    OPENBLAS_THREAD_TIMEOUT=4, 1.0×."""
    return {
        **probe_environment(gpus),
        "COMPAT_MATRIX_PINS": json.dumps(cell.pin_dict),
        # Packages the environment may have besides the pins (a team's image): probed where found.
        **({"COMPAT_MATRIX_PROBE_ALSO": ",".join(also)} if also else {}),
        "COMPAT_MATRIX_ISSUE_PROBES": json.dumps([{"issue": i, "probe": p} for i, p in issue_probes]),
        "COMPAT_MATRIX_PROBE_TIMEOUT": str(timeout_s),
        "COMPAT_MATRIX_NONCE": nonce,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPYCACHEPREFIX": pycache,
        "HOME": "/tmp",
        "OPENBLAS_THREAD_TIMEOUT": "4",
        "OMP_WAIT_POLICY": "PASSIVE",
    }


@dataclass(frozen=True)
class RunResult:
    """How the driver's run ended, whatever ran it (a container, a local process)."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    oom_killed: bool = False


@dataclass
class DriverReport:
    python: str | None = None
    installed: dict[str, str | None] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    oom_kills: int | None = None  # during the run, by the driver's own count (where it could read one)
    # In a prober: whether the driver cleaned it up after its probes, and the container's count of
    # OOM kills then (backends/prober.py).
    cleaned: bool = False
    oom_total: int | None = None


def parse(output: str, nonce: str) -> DriverReport:
    """Only lines that start with this run's nonce count; anything else is noise."""
    report = DriverReport()
    prefix = nonce + " "
    for line in output.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            obj = json.loads(line[len(prefix):])
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        kind = obj.get("kind")
        if kind == "env":
            report.python = obj.get("python")
            report.installed = dict(obj.get("installed") or {})
        elif kind == "probe":
            report.probes.append(obj)
        elif kind == "done":
            report.complete = True
            report.oom_kills = _count(obj.get("oom_kills"))
            report.cleaned = obj.get("cleaned") is True
            report.oom_total = _count(obj.get("oom_total"))
    return report


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def judge(ran: RunResult, report: DriverReport, memory: str) -> Verdict:
    """The cell's verdict from the probe run: the probes first, then how the run ended."""
    verdict = classify_probes(report.probes) if report.probes else None
    if ran.oom_killed:
        return Verdict(Outcome.CRASH, f"out of memory: the engine killed the probes at the {memory} limit")
    if verdict is not None and verdict.outcome not in (Outcome.PASS, Outcome.WARN):
        return verdict
    if ran.timed_out:
        return Verdict(Outcome.TIMEOUT, "the probes did not finish within the time limit")
    if report.python is None:
        last = [ln for ln in ran.stderr.splitlines() if ln.strip()]
        if not last:
            # Nothing from the interpreter either: no word from the world under test (a driver
            # killed from outside, a venv removed under it, an exec the engine dropped).
            return Verdict(Outcome.INFRA_ERROR, f"the probe driver printed nothing (exit code {ran.exit_code})")
        return Verdict(Outcome.BUILD_ERROR, f"the environment cannot run Python: {last[-1].strip()}")
    if not report.complete:
        return Verdict(Outcome.CRASH, f"the probe driver died (exit code {ran.exit_code})")
    if ran.exit_code != 0:
        # Its records are not the driver's own unless it ended in order: a driver killed after the
        # last of them (by probe code, which could have written them) is what it is, a crash.
        return Verdict(Outcome.CRASH, f"the probe driver did not end in order (exit code {ran.exit_code})")
    return verdict or Verdict(Outcome.INFRA_ERROR, "the probe driver reported no probe")


def conclude(ran: RunResult, nonce: str, log_dir: Path, memory: str) -> tuple[DriverReport, Verdict]:
    """Read what the driver said, keep it in the cell's log directory, and judge the run."""
    report = parse(ran.stdout, nonce)
    with open(log_dir / "probes.jsonl", "w", encoding="utf-8") as f:
        for p in report.probes:
            f.write(json.dumps(p, sort_keys=True) + "\n")
    (log_dir / "driver.stderr").write_text(ran.stderr, encoding="utf-8")
    return report, judge(ran, report, memory)


def driver_timeout(timeout_s: float) -> float:
    """The limit on a whole driver run: each probe's limit, plus the driver's own start-up."""
    n_probes = len([n for n in probe_files() if not n.startswith("_")])
    return timeout_s * max(n_probes, 1) + 60.0


@dataclass(frozen=True)
class Probed:
    """A finished probe run: what the driver said, the verdict, and where its logs are."""

    report: DriverReport
    verdict: Verdict
    log_dir: Path
    cell: str


class SharedProbes:
    """Cells whose installed environments are identical share one probe run.

    A layered cell whose later steps land on what a together cell resolved to holds the same files
    as that cell; probing them twice would say the same thing twice. The key is the base, the pins
    (the probes read them) and the environment's fingerprint (probes/_fingerprint.py: interpreter
    and every installed file's hash). A cell that finds its key taken waits for that probe run and
    takes its verdict; when the run failed to happen (an engine fault) it probes for itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str, str], tuple[threading.Event, list[Probed]]] = {}

    def probe(self, cell: Cell, fingerprint: str | None, log_dir: Path, run: Callable[[], Probed]) -> Probed:
        if not fingerprint:
            return run()
        key = (cell.base, json.dumps(cell.pin_dict, sort_keys=True), fingerprint)
        with self._lock:
            slot = self._runs.get(key)
            mine = slot is None
            if mine:
                slot = self._runs[key] = (threading.Event(), [])
        assert slot is not None
        done, result = slot
        if mine:
            try:
                result.append(run())
                return result[0]
            finally:
                done.set()
        done.wait()
        if not result:
            return run()
        first = result[0]
        for name in ("probes.jsonl", "driver.stderr"):
            if (first.log_dir / name).is_file():
                shutil.copyfile(first.log_dir / name, log_dir / name)
        (log_dir / "probes-shared-with").write_text(
            f"{first.cell}\n(the same installed files: probed once, in that cell)\n", encoding="utf-8")
        return first
