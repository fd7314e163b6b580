"""Runs cells through a backend, one after another, and keeps every finished cell's record.

One cell's failure (or exception) is that cell's outcome, never the end of the sweep; an
interrupt ends it with the finished rows kept.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from matrix.cells import Cell
from matrix.classify import Outcome
from matrix.errors import ENGINE_GONE, EXIT_INTERRUPTED
from matrix.install import redact
from matrix.spec import Base
from matrix.store import Record, RecordLog


class Backend(Protocol):
    name: str

    def start(self) -> list[str]: ...
    def base_id(self, base: Base) -> str: ...
    def skip_reason(self, base: Base) -> str | None: ...
    def run_cell(self, cell: Cell, log_dir: Path) -> Record: ...
    def close(self, *, interrupted: bool) -> None: ...


class Terminated(BaseException):
    """SIGTERM, raised where the sweep is, like KeyboardInterrupt for SIGINT."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass
class SweepResult:
    records: list[Record]
    total: int
    # None when every cell ran; else the exit code of the interrupt (130 SIGINT, 143 SIGTERM).
    interrupted: int | None = None
    # Why the sweep stopped before the end on its own (a full disk), if it did.
    stopped: str | None = None


# The tool's world failing in a way that will fail every later cell too: stop, do not retry.
_FATAL = ("No space left on device", ENGINE_GONE)


def _fatal(record: Record) -> str | None:
    """The fatal condition this record reports, if any."""
    if record.outcome is not Outcome.INFRA_ERROR:
        return None
    return next((f for f in _FATAL if f in record.error), None)


def _run_once(backend: Backend, cell: Cell, log_dir: Path, run_id: str) -> Record:
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    try:
        return backend.run_cell(cell, log_dir)
    except Exception as e:  # noqa: BLE001 - one cell's bug is that cell's infra-error
        return Record.for_cell(cell, backend=backend.name, run_id=run_id, error=redact(f"{type(e).__name__}: {e}"))


def _eta(started: float, done: int, total: int) -> str:
    """' (about 4m10s left)' from the pace so far; nothing before the first cell finished."""
    if not done:
        return ""
    left = (time.monotonic() - started) / done * (total - done)
    return f" (about {int(left // 60)}m{int(left % 60):02d}s left)"


def sweep(
    cells: tuple[Cell, ...],
    backend: Backend,
    results_dir: Path,
    run_id: str,
    echo: Callable[[str], None] = print,
    *,
    retry_waits: tuple[float, ...] = (10.0, 60.0),
    sleep: Callable[[float], None] = time.sleep,
) -> SweepResult:
    """Run every cell; an infra-error is retried after each of `retry_waits` (growing) seconds,
    unless an earlier cell already failed the same way through every retry (a base image that
    cannot be pulled fails all of its cells alike)."""
    records: list[Record] = []
    log = RecordLog(results_dir / "runs" / f"{run_id}.jsonl")
    result = SweepResult(records, len(cells))
    width = len(str(len(cells)))
    pad = " " * (2 * width + 3)
    persistent: set[str] = set()
    started = time.monotonic()
    try:
        for i, cell in enumerate(cells, 1):
            echo(f"[{i:>{width}}/{len(cells)}] {cell.id} ...{_eta(started, i - 1, len(cells))}")
            record = _run_once(backend, cell, results_dir / "logs" / cell.id, run_id)
            for wait in retry_waits:
                if record.outcome is not Outcome.INFRA_ERROR or record.error in persistent or _fatal(record):
                    break
                echo(f"{pad} infra-error ({record.error[:120]}); again in {wait:.0f}s")
                sleep(wait)
                record = _run_once(backend, cell, results_dir / "logs" / cell.id, run_id)
            else:
                if record.outcome is Outcome.INFRA_ERROR:
                    persistent.add(record.error)
            records.append(record)
            log.append(record)
            detail = f" — {record.error}" if record.error else ""
            echo(f"{pad} {record.outcome.value} in {record.duration_s:.1f}s{detail[:160]}")
            fatal = _fatal(record)
            if fatal:
                result.stopped = f"{fatal}: stopped after {i} of {len(cells)} cells"
                break
    except KeyboardInterrupt:
        result.interrupted = EXIT_INTERRUPTED
    except Terminated:
        result.interrupted = 128 + signal.SIGTERM
    finally:
        log.close()
    return result
