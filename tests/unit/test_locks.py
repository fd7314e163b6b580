"""Run locks tell live runs from dead ones; a results directory has one writer at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from matrix import locks
from matrix.errors import ConfigError

HOLD = ("import sys, time; from matrix import locks; locks.hold_run(sys.argv[1]); "
        "print('held', flush=True); time.sleep(60)")


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


def test_a_run_is_live_while_its_process_holds_the_lock_and_dead_after_sigkill() -> None:
    with subprocess.Popen([sys.executable, "-c", HOLD, "run-a"], stdout=subprocess.PIPE, text=True,
                          env=os.environ.copy()) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert locks.is_live("run-a")
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not locks.is_live("run-a")
    assert not locks.is_live("never-ran")


def test_release_ends_the_run() -> None:
    held = locks.hold_run("run-b")
    held.release()
    assert not locks.is_live("run-b")


def test_one_writer_per_results_directory(tmp_path: Path) -> None:
    first = locks.hold_results(tmp_path / "results")
    with pytest.raises(ConfigError) as info:
        locks.hold_results(tmp_path / "results")
    assert "another compat-matrix run is writing" in str(info.value)
    first.release(remove=False)
    locks.hold_results(tmp_path / "results").release(remove=False)
