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


HOLD_FILE = ("import sys, time; from pathlib import Path; from matrix import locks; "
             "locks.hold_file(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")


def test_a_lock_beside_the_objects_is_live_for_any_state_dir_and_dead_after_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "where-the-venvs-are" / "run.lock"
    other_home = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "another-state"), HOME=str(tmp_path / "another-home"))
    with subprocess.Popen([sys.executable, "-c", HOLD_FILE, str(path)], stdout=subprocess.PIPE, text=True,
                          env=other_home) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert locks.file_held(path) is True and path.exists()
        with pytest.raises(RuntimeError, match="held already"):
            locks.hold_file(path)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert locks.file_held(path) is False
    assert not path.exists()  # a dead holder's lock goes once asked about
    assert locks.file_held(path) is None


def test_a_lock_beside_the_objects_is_released_and_a_dead_ones_file_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    path.write_text("a lock file its holder left when it died\n")
    held = locks.hold_file(path)
    assert locks.file_held(path) is True
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # others can open it to ask
    held.release()
    assert locks.file_held(path) is None
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing aside is left


def test_results_that_cannot_be_a_directory_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    a_file = tmp_path / "results.csv"
    a_file.write_text("not a directory")
    for where, says in ((a_file, "is a file, not a directory"),
                        (a_file / "sub", "a part of the path is a file"),
                        (Path("/sys/compat-matrix-results"), "cannot make the directory or its lock file there")):
        with pytest.raises(ConfigError) as info:
            locks.hold_results(where)
        assert info.value.file == str(where) and info.value.key == "--results" and says in info.value.problem
        assert info.value.exit_code == 2
    assert a_file.read_text() == "not a directory"


def test_a_lock_that_is_not_a_plain_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    cases = {"a directory": lambda p: (p / ".lock").mkdir(),
             "a symbolic link": lambda p: (p / ".lock").symlink_to(tmp_path / "elsewhere"),
             "not a plain file": lambda p: os.mkfifo(p / ".lock")}
    for what, make in cases.items():
        results = tmp_path / what.replace(" ", "-")
        results.mkdir()
        make(results)
        with pytest.raises(ConfigError) as info:
            locks.hold_results(results)
        assert info.value.file == str(results / ".lock") and f"is {what}, where" in info.value.problem
    assert not (tmp_path / "elsewhere").exists()  # the link was not followed

