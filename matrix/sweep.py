"""Runs cells through a backend, `--jobs` at a time, and keeps every finished cell's record.

One cell's failure (or exception) is that cell's outcome, never the end of the sweep; an
interrupt ends it with the finished rows kept. The tool's own steps for a cell (its log
directory, the result cache) failing make that cell an infra-error, never a dead worker: every
cell the sweep takes ends with a record.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from matrix.cells import Cell
from matrix.errors import ENGINE_GONE, EXIT_INTERRUPTED, Cancelled, redact
from matrix.gpus import NO_GPU_MARK  # a machine without GPUs: waiting mends nothing, not retried
from matrix.resultcache import ResultCache
from matrix.spec import Base
from matrix.store import Outcome, Record, RecordLog


class Backend(Protocol):
    name: str

    def start(self) -> list[str]: ...
    def base_id(self, base: Base) -> str: ...
    def skip_reason(self, base: Base) -> str | None: ...
    def run_cell(self, cell: Cell, log_dir: Path) -> Record: ...
    def close(self, *, interrupted: bool) -> None: ...
    def cancel(self) -> None:
        """Stop the cells under way on other threads (an interrupt): their run_cell raises Cancelled."""
    def settled(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until the backend's own start-up is through: what the run
        does meanwhile (`sweep`'s `meanwhile`) then does not compete with it for the interpreter."""
    def idle(self) -> None:
        """A worker has no cell left to take while others finish theirs: tidy what is through (or
        start to: close() then waits for it)."""


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
# How long the work done meanwhile waits for the backend to settle, at most.
_SETTLE_S = 10.0


def _fatal(record: Record) -> str | None:
    """The fatal condition this record reports, if any."""
    if record.outcome is not Outcome.INFRA_ERROR:
        return None
    error = record.error.lower()  # the engine's Go errors say "no space left on device"
    return next((f for f in _FATAL if f.lower() in error), None)


def _os_error(e: BaseException) -> str:
    """An OSError without its file name ("[Errno 20] Not a directory"): the same fault on every
    cell reads the same, so the sweep retries it for one cell only (_Sweep.persistent)."""
    if isinstance(e, OSError) and e.strerror:
        return f"[Errno {e.errno}] {e.strerror}" if e.errno is not None else e.strerror
    return f"{type(e).__name__}: {e}"


def _run_once(backend: Backend, cell: Cell, log_dir: Path, run_id: str) -> Record:
    try:
        shutil.rmtree(log_dir, ignore_errors=True)
        log_dir.mkdir(parents=True)
    except OSError as e:  # the tool's bookkeeping, not the cell: no verdict
        return Record.for_cell(cell, backend=backend.name, run_id=run_id, error=redact(
            f"the cells' log directory {log_dir.parent} cannot be written: {_os_error(e)}"))
    try:
        return backend.run_cell(cell, log_dir)
    except Cancelled:
        raise
    except Exception as e:  # noqa: BLE001 - one cell's bug is that cell's infra-error
        return Record.for_cell(cell, backend=backend.name, run_id=run_id, error=redact(f"{type(e).__name__}: {e}"))


def _eta(started: float, done: int, total: int, jobs: int = 1) -> str:
    """' (about 4m10s left)' from the pace so far; nothing before the first cell finished."""
    if not done:
        return ""
    left = (time.monotonic() - started) / done * max(total - done - (jobs - 1), 0)
    return f" (about {int(left // 60)}m{int(left % 60):02d}s left)"


def default_jobs(backend: str = "venv") -> int:
    """Cells in parallel by default: one per core and one more (a cell is mostly one busy process
    at a time, and part of the time it waits on the index or a process starting: 12 bench cells
    take 6.5 s with 3 workers on 2 cores, 7.1 s with 2), at most 8 (downloads share the network).
    The docker backend: one per core. Each of its workers has a prober of its own to start (the
    workbench is shared), and every exec costs the engine's daemons CPU of their own: a third worker
    on 2 cores made the 12 bench cells slower, not faster (`nox -s bench`: 5.5 s, against 5.1 s with 2,
    when each worker had a workbench of its own too)."""
    return max(2, min((os.cpu_count() or 1) + (backend != "docker"), 8))


class _Sweep:
    """The state one sweep shares between its workers; records are logged by the caller's thread."""

    def __init__(self, backend: Backend, results_dir: Path, run_id: str, echo: Callable[[str], None],
                 total: int, retry_waits: tuple[float, ...], sleep: Callable[[float], None],
                 cache: ResultCache | None, base_ids: dict[str, str]) -> None:
        self.backend, self.results_dir, self.run_id = backend, results_dir, run_id
        self.echo, self.total, self.retry_waits, self.sleep = echo, total, retry_waits, sleep
        self.cache, self.base_ids = cache, base_ids
        self.width = len(str(total))
        self.pad = " " * (2 * self.width + 3)
        self.persistent: set[str] = set()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.begun = 0
        self.finished = 0
        self.stop = threading.Event()
        self.jobs = 1

    def say(self, line: str) -> None:
        with self.lock:
            self.echo(line)

    def one(self, cell: Cell) -> Record:
        """Run one cell with its retries; its verdict goes to the result cache. Always a record
        (an exception of the tool's own is the cell's infra-error); raises only Cancelled and
        interrupts."""
        with self.lock:
            self.begun += 1
            self.echo(f"[{self.begun:>{self.width}}/{self.total}] {cell.id} ..."
                      f"{_eta(self.started, self.finished, self.total, self.jobs)}")
        try:
            return self._one(cell)
        except Cancelled:
            raise
        except Exception as e:  # noqa: BLE001 - the tool's bug on one cell is that cell's infra-error
            return Record.for_cell(cell, backend=self.backend.name, run_id=self.run_id,
                                   error=redact(f"the sweep failed on this cell: {type(e).__name__}: {e}"))

    def _one(self, cell: Cell) -> Record:
        log_dir = self.results_dir / "logs" / cell.id
        record = _run_once(self.backend, cell, log_dir, self.run_id)
        for wait in self.retry_waits:
            if (record.outcome is not Outcome.INFRA_ERROR or record.error in self.persistent
                    or _fatal(record) or record.error.startswith(NO_GPU_MARK) or self.stop.is_set()):
                break
            self.say(f"{self.pad} {cell.id}: infra-error ({record.error[:120]}); again in {wait:.0f}s")
            self.sleep(wait)
            record = _run_once(self.backend, cell, log_dir, self.run_id)
        else:
            if record.outcome is Outcome.INFRA_ERROR:
                self.persistent.add(record.error)
        if self.cache is not None and self.base_ids.get(cell.base):  # a base we cannot identify: not kept
            try:
                self.cache.put(self.cache.key(cell, self.base_ids[cell.base]), record)
            except OSError as e:
                # The verdict store is unwritable (a file where its directory goes, full, read-only):
                # a verdict the tool cannot keep is bookkeeping that failed, so no verdict; the
                # cell runs again once the store is mended. Not retried: the cell was fine.
                error = (f"the result cache {self.cache.directory} cannot keep verdicts: {_os_error(e)} "
                         f"(this cell's was {record.outcome.value})")
                self.persistent.add(error)
                return replace(record, outcome=Outcome.INFRA_ERROR, error=redact(error), cached=False)
        return record

    def kept_venv(self, record: Record) -> str | None:
        """The path of the cell's venv kept for a look inside (--keep: the backend wrote it down)."""
        try:
            return (self.results_dir / "logs" / record.cell / "venv-path").read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def finish_line(self, record: Record) -> str:
        detail = f" — {record.error}" if record.error else ""
        who = f" {record.cell}:" if self.jobs > 1 else ""
        return f"{self.pad}{who} {record.outcome.value} in {record.duration_s:.1f}s{detail[:160]}"


def sweep(
    cells: tuple[Cell, ...],
    backend: Backend,
    results_dir: Path,
    run_id: str,
    echo: Callable[[str], None] = print,
    *,
    retry_waits: tuple[float, ...] = (10.0, 60.0),
    sleep: Callable[[float], None] = time.sleep,
    jobs: int = 1,
    cache: ResultCache | None = None,
    rerun: bool = False,
    meanwhile: Callable[[], object] | None = None,
) -> SweepResult:
    """Run every cell, `jobs` at a time; an infra-error is retried after each of `retry_waits`
    (growing) seconds, unless an earlier cell already failed the same way through every retry (a
    base image that cannot be pulled fails all of its cells alike). With a result cache, a cell
    whose verdict is kept there under an unchanged key is not run (unless `rerun`). `meanwhile`
    runs on a thread of its own once there is a cell to run and the backend has settled (work for the
    idle main thread)."""
    records: list[Record] = []
    result = SweepResult(records, len(cells))
    log = _Log(results_dir / "runs" / f"{run_id}.jsonl")
    if log.failed:  # nothing is run that could not be kept: the run's log is its record of them
        result.stopped = log.failed
        return result
    base_ids: dict[str, str] = {}
    if cache is not None:
        base_ids = {name: backend.base_id(cache.spec.base(name)) for name in {c.base for c in cells}}
    try:
        todo = list(cells)
        if cache is not None and not rerun:
            todo = []
            for cell in cells:
                hit = cache.get(cache.key(cell, base_ids[cell.base]))
                if hit is None:
                    todo.append(cell)
                    continue
                hit.cached = True
                records.append(hit)
            if not log.append(*records):  # one write to disk for all of them
                result.stopped = log.failed
                return result
            if records:
                echo(f"{len(records)} cell(s) from the result cache: nothing they depend on has changed "
                     "(--rerun runs them again)")
        if todo and meanwhile is not None:
            def later() -> None:
                backend.settled(_SETTLE_S)
                meanwhile()

            threading.Thread(target=later, name="compat-matrix-meanwhile", daemon=True).start()
        state = _Sweep(backend, results_dir, run_id, echo, len(todo), retry_waits, sleep, cache, base_ids)
        if jobs <= 1 or len(todo) <= 1:
            _serial(state, todo, records, log, result)
        else:
            _parallel(state, todo, min(jobs, len(todo)), records, log, result)
    except KeyboardInterrupt:
        result.interrupted = EXIT_INTERRUPTED
    except Terminated:
        result.interrupted = 128 + signal.SIGTERM
    finally:
        log.close()
    return result


class _Log:
    """The run's record log (store.RecordLog) that reports a failure to write it instead of raising:
    the sweep stops on it and says why (an infra stop), rather than losing a worker or the run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed: str | None = None
        self._log: RecordLog | None = None
        try:
            self._log = RecordLog(path)
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        self.failed = redact(f"the run's record log {self.path} cannot be written: {_os_error(e)}")

    def append(self, *records: Record) -> bool:
        if self._log is None:
            return False
        try:
            self._log.append(*records)
        except OSError as e:
            self._fail(e)
            return False
        return True

    def close(self) -> None:
        if self._log is not None:
            try:
                self._log.close()
            except OSError as e:
                if self.failed is None:
                    self._fail(e)


def _keep(state: _Sweep, record: Record, records: list[Record], log: _Log, result: SweepResult) -> None:
    """Log a finished cell; a fatal condition, or a record log that cannot be written, stops the
    sweep from taking more cells (the record stays in `records`, for the table)."""
    records.append(record)
    logged = log.append(record)
    state.finished += 1
    state.say(state.finish_line(record))
    kept = state.kept_venv(record)
    if kept:
        state.say(f"{state.pad} kept {record.cell}'s venv: {kept}")
    fatal = _fatal(record) or (None if logged else log.failed)
    if fatal and not state.stop.is_set():
        state.stop.set()
        result.stopped = f"{fatal}: stopped after {state.finished} of {state.total} cells"


def _serial(state: _Sweep, todo: list[Cell], records: list[Record], log: _Log, result: SweepResult) -> None:
    for cell in todo:
        _keep(state, state.one(cell), records, log, result)
        if state.stop.is_set():
            break


# How far past the next cell a worker looks for one that need not wait: enough to reach the next
# base's cells in a real matrix, and a bound on the work of each take (not the whole list's).
_LOOKAHEAD = 512


class _Pending:
    """The cells left, handed out in order, except that a worker skips past a cell that would wait
    for a cell under way (install.RunInstalls): one with a pin no cell of the run has installed yet
    on its base while a cell under way has it, or one that must install online (a pin new to its
    base) while another online install on that base is under way. A cell further on (often on
    another base) can go ahead meanwhile."""

    def __init__(self, cells: list[Cell]) -> None:
        self._cells = cells
        self._lock = threading.Lock()
        self._under_way: list[Cell] = []
        self._installed: set[tuple[str, str, str]] = set()

    def _needs(self, cell: Cell) -> set[tuple[str, str, str]]:
        """What the cell would wait for: its pins on its base, and its base's online installs
        ("" for the package) when one of those pins is new there."""
        pins = {(cell.base, name, version) for name, version in cell.pins}
        return pins | {(cell.base, "", "")} if not pins <= self._installed else pins

    def take(self) -> Cell | None:
        with self._lock:
            if not self._cells:
                return None
            busy = set().union(*(self._needs(c) for c in self._under_way)) - self._installed
            cell = next((c for c in self._cells[:_LOOKAHEAD] if busy.isdisjoint(self._needs(c))), self._cells[0])
            self._cells.remove(cell)
            self._under_way.append(cell)
            return cell

    def under_way(self) -> bool:
        """Whether a cell is still under way on some worker."""
        with self._lock:
            return bool(self._under_way)

    def finished(self, cell: Cell) -> None:
        with self._lock:
            self._under_way.remove(cell)
            self._installed.update((cell.base, name, version) for name, version in cell.pins)


def _parallel(state: _Sweep, todo: list[Cell], jobs: int, records: list[Record], log: _Log,
              result: SweepResult) -> None:
    """Workers take cells (mostly in order: _Pending); this thread logs what they finish. On an
    interrupt the backend cancels what is under way (those cells are not recorded) and the workers
    are not waited for longer than it takes them to notice."""
    state.jobs = jobs
    # One mode's cells first, then the next's: the cells that differ only by mode often end in the
    # same environment and share one probe run (probing.SharedProbes); side by side, one worker
    # would sit waiting for the other's probes. Layered first: its installs never stop at the
    # resolver, so its cells are the ones that probe; the together cells after them mostly share
    # those probe runs or stop at a conflict, and a sweep that ends on short cells ends sooner.
    modes = sorted(dict.fromkeys(c.mode for c in todo), key=lambda m: m != "layered")
    pending = _Pending(sorted(todo, key=lambda c: modes.index(c.mode)))
    done: queue.SimpleQueue[Record | None] = queue.SimpleQueue()

    def work() -> None:
        try:
            while not state.stop.is_set():
                cell = pending.take()
                if cell is None:
                    if not pending.under_way():  # the last one: the backend's close() tidies it all at once
                        return
                    try:
                        state.backend.idle()
                    except Exception as e:  # noqa: BLE001 - tidying up is no cell's verdict
                        state.say(f"{state.pad} tidying finished cells failed: {redact(str(e))}")
                    return
                try:
                    done.put(state.one(cell))
                except Cancelled:
                    return
                pending.finished(cell)
        finally:
            done.put(None)  # this worker is through

    workers = [threading.Thread(target=work, name=f"compat-matrix-worker-{i}", daemon=True) for i in range(jobs)]
    try:
        for w in workers:  # in the try: an interrupt while they start cancels the ones started
            w.start()
        running = len(workers)
        while running:
            try:
                item = done.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                running -= 1
            else:
                _keep(state, item, records, log, result)
    except BaseException:
        state.stop.set()
        state.backend.cancel()
        deadline = time.monotonic() + 30.0
        for w in workers:
            if w.ident is not None:  # started
                w.join(timeout=max(0.0, deadline - time.monotonic()))
        raise
