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
from matrix.errors import EXIT_INTERRUPTED
from matrix.install import redact
from matrix.spec import Base
from matrix.store import Record, RecordLog


class Backend(Protocol):
    name: str

    def start(self) -> list[str]: ...
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


def sweep(
    cells: tuple[Cell, ...],
    backend: Backend,
    results_dir: Path,
    run_id: str,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    records: list[Record] = []
    log = RecordLog(results_dir / "runs" / f"{run_id}.jsonl")
    result = SweepResult(records, len(cells))
    width = len(str(len(cells)))
    try:
        for i, cell in enumerate(cells, 1):
            log_dir = results_dir / "logs" / cell.id
            shutil.rmtree(log_dir, ignore_errors=True)
            log_dir.mkdir(parents=True)
            echo(f"[{i:>{width}}/{len(cells)}] {cell.id} ...")
            try:
                record = backend.run_cell(cell, log_dir)
            except Exception as e:  # noqa: BLE001 - one cell's bug is that cell's infra-error
                record = Record(cell=cell.id, base=cell.base, mode=cell.mode, pins=cell.pin_dict,
                                outcome=Outcome.INFRA_ERROR, backend=backend.name, run_id=run_id,
                                error=redact(f"{type(e).__name__}: {e}"))
            records.append(record)
            log.append(record)
            detail = f" — {record.error}" if record.error else ""
            echo(f"{'':>{2 * width + 3}} {record.outcome.value} in {record.duration_s:.1f}s{detail[:160]}")
    except KeyboardInterrupt:
        result.interrupted = EXIT_INTERRUPTED
    except Terminated:
        result.interrupted = 128 + signal.SIGTERM
    finally:
        log.close()
    return result
