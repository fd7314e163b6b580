"""Diffs between runs: regressions, fixes, new and gone cells; infra errors are no verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix.cli import main
from matrix.history import diff, format_diff
from matrix.store import Outcome, Record, RecordLog


def rec(cell: str, outcome: Outcome, error: str = "") -> Record:
    return Record(cell=cell, base="b", mode="layered", pins={"numpy": "1"}, outcome=outcome, error=error)


BEFORE = [rec("a", Outcome.PASS), rec("b", Outcome.IMPORT_ERROR, "dtype size changed"), rec("c", Outcome.PASS),
          rec("d", Outcome.NO_WHEEL), rec("e", Outcome.PASS), rec("gone", Outcome.PASS)]
AFTER = [rec("a", Outcome.IMPORT_ERROR, "numpy.dtype size changed"), rec("b", Outcome.PASS), rec("c", Outcome.PASS),
         rec("d", Outcome.BUILD_ERROR), rec("e", Outcome.INFRA_ERROR, "Read timed out"), rec("new", Outcome.WARN)]


def test_diff_sorts_every_change() -> None:
    d = diff(BEFORE, AFTER)
    assert [(a.cell, b.outcome) for a, b in d.regressions] == [("a", Outcome.IMPORT_ERROR)]
    assert [b.cell for _, b in d.fixed] == ["b"]
    assert [b.cell for _, b in d.changed] == ["d"]
    assert [b.cell for _, b in d.no_verdict] == ["e"]  # an infra error is never a regression
    assert [r.cell for r in d.new] == ["new"] and [r.cell for r in d.gone] == ["gone"]
    text = format_diff(d)
    assert text.startswith("regressions (1):\n  a: pass → import-error — numpy.dtype size changed")
    assert format_diff(diff(AFTER, AFTER)) == "no change\n"


def test_diff_command_exits_1_on_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "runs").mkdir()
    for name, records in (("r1", BEFORE), ("r2", AFTER)):
        log = RecordLog(tmp_path / "runs" / f"{name}.jsonl")
        for r in records:
            log.append(r)
        log.close()
    assert main(["diff", "r1", "r2", "--results", str(tmp_path)]) == 1
    assert "regressions (1)" in capsys.readouterr().out
    assert main(["diff", "r2", "r2", "--results", str(tmp_path)]) == 0
    assert main(["diff", "r1", "nope", "--results", str(tmp_path)]) == 2
