"""The sweep loop: retries of infra errors, a full disk stops it, one cell's bug is that cell's."""

from __future__ import annotations

from pathlib import Path

from matrix.cells import Cell
from matrix.classify import Outcome
from matrix.spec import Base
from matrix.store import Record, load_records
from matrix.sweep import sweep

CELLS = tuple(Cell("b", "together", (("numpy", v),)) for v in ("1.0", "2.0", "3.0"))


class ScriptedBackend:
    """Answers each run_cell with the next scripted outcome: the faults a real index or disk
    will not produce on demand."""

    name = "scripted"

    def __init__(self, script: list[tuple[Outcome, str] | Exception]) -> None:
        self.script = list(script)
        self.calls: list[str] = []

    def start(self) -> list[str]:
        return []

    def skip_reason(self, base: Base) -> str | None:
        return None

    def close(self, *, interrupted: bool) -> None:
        pass

    def run_cell(self, cell: Cell, log_dir: Path) -> Record:
        assert log_dir.is_dir()
        self.calls.append(cell.id)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        outcome, error = step
        return Record(cell=cell.id, base=cell.base, mode=cell.mode, pins=cell.pin_dict, outcome=outcome, error=error)


def test_infra_errors_are_retried_with_growing_waits(tmp_path: Path) -> None:
    flaky = (Outcome.INFRA_ERROR, "Read timed out")
    backend = ScriptedBackend([flaky, flaky, (Outcome.PASS, ""), (Outcome.PASS, ""), (Outcome.NO_WHEEL, "x")])
    waits: list[float] = []
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, retry_waits=(1.0, 5.0), sleep=waits.append)
    assert waits == [1.0, 5.0]
    assert [r.outcome for r in result.records] == [Outcome.PASS, Outcome.PASS, Outcome.NO_WHEEL]
    assert load_records(tmp_path / "runs" / "r1.jsonl") == result.records


def test_a_failure_that_outlived_its_retries_is_not_retried_again(tmp_path: Path) -> None:
    gone = (Outcome.INFRA_ERROR, "base image x is not on the engine and could not be pulled")
    backend = ScriptedBackend([gone] * 3 + [gone, gone])
    waits: list[float] = []
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, retry_waits=(1.0, 5.0), sleep=waits.append)
    assert waits == [1.0, 5.0]  # only the first cell waited
    assert [r.outcome for r in result.records] == [Outcome.INFRA_ERROR] * 3


def test_a_full_disk_stops_the_sweep(tmp_path: Path) -> None:
    full = (Outcome.INFRA_ERROR, "OSError: [Errno 28] No space left on device")
    backend = ScriptedBackend([(Outcome.PASS, ""), full])
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, sleep=lambda _: None)
    assert len(result.records) == 2 and backend.calls == [CELLS[0].id, CELLS[1].id]
    assert result.stopped and "No space left on device" in result.stopped


def test_an_exception_in_one_cell_is_that_cells_infra_error(tmp_path: Path) -> None:
    backend = ScriptedBackend([(Outcome.PASS, ""), RuntimeError("bug"), RuntimeError("bug"), RuntimeError("bug"),
                               (Outcome.PASS, "")])
    result = sweep(CELLS, backend, tmp_path, "r1", echo=lambda _: None, sleep=lambda _: None)
    assert [r.outcome for r in result.records] == [Outcome.PASS, Outcome.INFRA_ERROR, Outcome.PASS]
    assert result.records[1].error == "RuntimeError: bug"


def test_progress_shows_done_total_current_cell_and_eta(tmp_path: Path) -> None:
    lines: list[str] = []
    backend = ScriptedBackend([(Outcome.PASS, "")] * 3)
    sweep(CELLS, backend, tmp_path, "r1", echo=lines.append, sleep=lambda _: None)
    starts = [ln for ln in lines if ln.startswith("[")]
    assert starts[0] == f"[1/3] {CELLS[0].id} ..."
    assert starts[2].startswith(f"[3/3] {CELLS[2].id} ... (about ") and starts[2].endswith("s left)")
