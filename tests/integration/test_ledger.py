"""The results directory is a ledger (venv backend, real index): a partial run, an interrupted run
and a resumed run each leave every verdict in place, and a regression is found cell by cell."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from matrix.backends import interpreters

MATRIX = """
bases:
  py311: {python: "3.11"}
packages:
  numpy: ["1.26.4", "2.2.6"]
  scipy: ["1.11.4", "1.14.1"]
modes: [together, layered]
layered_order: [scipy, numpy]
"""
BROKEN = "py311-numpy2.2.6-scipy1.11.4-layered"  # scipy built for numpy 1, numpy 2 forced over it


def run(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(d / "matrix.yaml"),
                           "--results", str(d / "results"), "--backend", "venv", *args],
                          capture_output=True, text=True, timeout=1200)


def ledger(d: Path) -> dict[str, dict[str, object]]:
    lines = (d / "results" / "ledger.jsonl").read_text().splitlines()
    return {r["cell"]: r for r in map(json.loads, lines)}


def table(d: Path) -> dict[str, str]:
    with open(d / "results" / "matrix.csv", newline="") as f:
        return {r["cell"]: r["outcome"] for r in csv.DictReader(f)}


def records(d: Path) -> list[str]:
    return [json.loads(line)["cell"] for line in (d / "results" / "records.jsonl").read_text().splitlines()]


def rewrite(d: Path, cell: str, **fields: object) -> None:
    """Change one cell's verdict in the ledger (and the table's records), as an earlier run left it."""
    for name in ("ledger.jsonl", "records.jsonl"):
        path = d / "results" / name
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for r in rows:
            if r["cell"] == cell:
                r.update(fields)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_no_run_loses_a_verdict(tmp_path: Path) -> None:
    if interpreters.find("3.11") is None:
        pytest.fail("python3.11 is needed for this test (pyenv has it on our machines)")
    d = tmp_path
    (d / "matrix.yaml").write_text(textwrap.dedent(MATRIX))

    first = run(d)
    assert first.returncode == 0, first.stdout + first.stderr
    verdicts = {c: r["outcome"] for c, r in ledger(d).items()}
    assert len(verdicts) == 8, first.stdout
    assert sorted(verdicts.values()).count("pass") == 6, {c: r["error"] for c, r in ledger(d).items()}
    assert len(verdicts) == 8 and verdicts[BROKEN] == "import-error"
    assert verdicts["py311-numpy2.2.6-scipy1.11.4-together"] == "resolve-conflict"
    assert table(d) == verdicts and sorted(records(d)) == sorted(verdicts)

    # One cell selected: the other seven keep their verdicts and the run that made them.
    one = "py311-numpy2.2.6-scipy1.14.1-together"
    first_run = ledger(d)["py311-numpy1.26.4-scipy1.11.4-together"]["run_id"]
    sel = run(d, "--select", one, "--rerun")
    assert sel.returncode == 0, sel.stdout + sel.stderr
    after = ledger(d)
    assert {c: r["outcome"] for c, r in after.items()} == verdicts
    assert after["py311-numpy1.26.4-scipy1.11.4-together"]["run_id"] == first_run
    assert after[one]["run_id"] != first_run
    assert table(d) == verdicts and len(records(d)) == 8

    # An earlier verdict that worked, then an interrupted re-run (SIGINT once its first cell is
    # through): every verdict stays, the finished cell's is new.
    rewrite(d, BROKEN, outcome="pass", error="")
    proc = subprocess.Popen([sys.executable, "-m", "matrix", "run", "--config", str(d / "matrix.yaml"),
                             "--results", str(d / "results"), "--backend", "venv", "--rerun", "--jobs", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 600
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if " in " in line and line.startswith(" ") and "s" in line:  # a cell's finish line
            break
        assert time.monotonic() < deadline, "".join(seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + out + err
    after = ledger(d)
    assert len(after) == 8 and after[BROKEN]["outcome"] == "pass"  # not reached: its verdict stands
    assert len(records(d)) == 8 and len(table(d)) == 8

    # The cell runs again: it worked in the ledger and fails now, a regression, cell by cell.
    regressed = run(d, "--select", BROKEN, "--rerun", "--fail-on-regression")
    assert regressed.returncode == 1, regressed.stdout + regressed.stderr
    assert "regression" in regressed.stdout and BROKEN in regressed.stdout
    assert {c: r["outcome"] for c, r in ledger(d).items()} == verdicts

    # --resume runs exactly the cells without a verdict.
    rewrite(d, one, outcome="infra-error", error="the engine went away")
    resumed = run(d, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 cells to run, 7 kept from the last run" in resumed.stdout
    assert {c: r["outcome"] for c, r in ledger(d).items()} == verdicts
    assert len(os.listdir(d / "results" / "history")) >= 4
