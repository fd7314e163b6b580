"""The venv backend's housekeeping (its real sweeps are in tests/integration)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from matrix import locks, paths
from matrix.backends.venv import KEPT_MARK, VenvBackend, live_lock
from matrix.cells import Cell
from matrix.store import Outcome
from tests.unit.conftest import inode_flags, on_ext


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_start_removes_venvs_of_dead_runs_only(make_spec) -> None:
    s = make_spec("bases: {py: {python: '3.11'}}\npackages: {numpy: ['1.26.4']}\n")
    dead = Path(tempfile.mkdtemp(prefix="compat-matrix-20260101T000000Z-dead00-"))
    alive = Path(tempfile.mkdtemp(prefix="compat-matrix-20260101T000000Z-a11ce0-"))
    held = locks.hold_run("20260101T000000Z-a11ce0")  # a run of an older version: its lock in the state dir only
    backend = VenvBackend(s, "20260101T000000Z-00aa00")
    try:
        notes = backend.start()
        assert not dead.exists() and alive.exists()
        assert notes == [f"removed {dead}, left by dead run 20260101T000000Z-dead00"]
    finally:
        backend.close(interrupted=False)
        held.release()
        alive.rmdir()


def test_image_only_and_missing_interpreters_are_skipped_with_a_reason(make_spec) -> None:
    s = make_spec("bases: {img: {image: 'python:3.11'}, gone: {python: '3.98'}}\npackages: {numpy: ['1']}\n")
    b = VenvBackend(s, "r")
    assert "names only an image" in (b.skip_reason(s.base("img")) or "")
    assert "no interpreter '3.98'" in (b.skip_reason(s.base("gone")) or "")


def test_cancel_kills_what_the_cells_are_running_and_nothing_new_starts(make_spec, tmp_path: Path) -> None:
    import threading
    import time

    from matrix.errors import Cancelled

    backend = VenvBackend(make_spec('bases: {b: {python: "3.11"}}\npackages: {numpy: ["1.26.4"]}\n'), "r1")
    caught: list[BaseException] = []

    def cell() -> None:
        try:  # a child that outlives its parent would keep the group busy: sh starts one
            backend._proc(["sh", "-c", "sleep 30 & wait"], {"PATH": "/usr/bin:/bin"}, tmp_path, 60)
        except BaseException as e:  # noqa: BLE001 - what the worker would see
            caught.append(e)

    t = threading.Thread(target=cell)
    started = time.monotonic()
    t.start()
    while not backend._running and time.monotonic() - started < 10:
        time.sleep(0.01)
    backend.cancel()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - started < 10
    assert len(caught) == 1 and isinstance(caught[0], Cancelled)
    with pytest.raises(Cancelled):
        backend._proc(["true"], {"PATH": "/usr/bin:/bin"}, tmp_path, 10)


SPEC = "bases: {py: {python: '3.11'}, gone: {python: '3.98'}}\npackages: {numpy: ['1.26.4']}\n"
# A run of another user or HOME: its own state directory, its backend started (so live), one work dir.
OTHER_RUN = """
import sys, tempfile, time
from matrix import spec
from matrix.backends.venv import VenvBackend
b = VenvBackend(spec.load(sys.argv[1]), sys.argv[2])
b.start()
print(tempfile.mkdtemp(prefix=f"compat-matrix-{sys.argv[2]}-"), flush=True)
time.sleep(60)
"""


def test_a_live_run_with_another_state_dir_keeps_its_venvs_and_a_killed_one_loses_them(
        make_spec, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    make_spec(SPEC)
    other = "20260101T000000Z-07e412"
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "other-state"), HOME=str(tmp_path / "other-home"))
    with subprocess.Popen([sys.executable, "-c", OTHER_RUN, str(tmp_path / "matrix.yaml"), other],
                          stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            work = Path(proc.stdout.readline().strip())
            assert work.is_dir()
            mine = VenvBackend(make_spec(SPEC), "20260101T000000Z-00aa01")
            try:
                assert mine.start() == []
                assert work.is_dir()  # live where its venvs are, though its state dir is not ours
            finally:
                mine.close(interrupted=False)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    later = VenvBackend(make_spec(SPEC), "20260101T000000Z-00aa02")
    try:
        assert later.start() == [f"removed {work}, left by dead run {other}"]
    finally:
        later.close(interrupted=False)
    assert not work.exists() and not live_lock(other).exists()


def test_a_kept_venv_is_named_and_no_other_run_removes_it(make_spec, tmp_path: Path) -> None:
    s = make_spec(SPEC)
    run_id = "20260101T000000Z-cee900"
    kept = VenvBackend(s, run_id, keep=True)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    cell = Cell("gone", "together", (("numpy", "1.26.4"),))
    record = kept.run_cell(cell, log_dir)  # no interpreter: over at once, its directory kept all the same
    kept.close(interrupted=False)
    assert record.outcome is Outcome.INFRA_ERROR
    venv = Path((log_dir / "venv-path").read_text().strip())
    runs = lambda: sorted(Path(tempfile.gettempdir()).glob(f"compat-matrix-{run_id}-*"))  # noqa: E731 - its own
    try:
        [work] = runs()  # the run's directory, which holds the cell's
        assert venv.parent.parent == work
        assert (work / KEPT_MARK).is_file() and (venv.parent / KEPT_MARK).is_file()
        assert not live_lock(run_id).exists()
        other = VenvBackend(s, "20260101T000000Z-00aa03")
        try:
            assert other.start() == []
        finally:
            other.close(interrupted=False)
        assert work.is_dir()
    finally:
        for d in runs():  # (only what this run made)
            shutil.rmtree(d)


def test_a_runs_lock_lives_from_start_or_its_first_cell_to_close(make_spec, tmp_path: Path) -> None:
    s = make_spec(SPEC)
    backend = VenvBackend(s, "20260101T000000Z-00aa04")
    backend.close(interrupted=False)  # closed before it started (bad input after the backend was made): nothing
    backend.start()
    assert locks.file_held(live_lock("20260101T000000Z-00aa04")) is True
    backend.close(interrupted=False)
    assert locks.file_held(live_lock("20260101T000000Z-00aa04")) is None
    lazy = VenvBackend(s, "20260101T000000Z-00aa05")
    (tmp_path / "l").mkdir()
    lazy.run_cell(Cell("gone", "together", (("numpy", "1.26.4"),)), tmp_path / "l")
    assert locks.file_held(live_lock("20260101T000000Z-00aa05")) is True
    lazy.close(interrupted=False)


def test_a_runs_cells_are_made_in_one_spread_directory_which_goes_with_the_run(
        make_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cell's work directory is made, under a random name, in the run's own directory, which
    is spread over the file system (paths.spread): in the temporary directory itself, ext4 made
    each run's venvs where the last run's had just been removed. The run's directory goes at
    close()."""
    s = make_spec(SPEC)
    backend = VenvBackend(s, "20260101T000000Z-5b7ead")
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    made: list[Path] = []
    real = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(Path(real(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    try:
        for mode in ("together", "layered"):  # no interpreter for this base: each over at once
            backend.run_cell(Cell("gone", mode, (("numpy", "1.26.4"),)), log_dir)
        monkeypatch.undo()
        run, *cells = made
        assert run.parent == Path(tempfile.gettempdir())
        assert run.name.startswith("compat-matrix-20260101T000000Z-5b7ead-")
        assert [c.parent for c in cells] == [run, run] and cells[0].name != cells[1].name
        assert run.is_dir() and not any(run.iterdir())  # each cell's directory went when the cell ended
        if on_ext(run):
            assert inode_flags(run) & paths.FS_TOPDIR_FL
    finally:
        backend.close(interrupted=False)
    assert not run.exists()


def test_spread_marks_a_directory_and_says_where_it_cannot(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    if on_ext(d):
        assert paths.spread(d) and inode_flags(d) & paths.FS_TOPDIR_FL
        assert not inode_flags(tmp_path) & paths.FS_TOPDIR_FL
    assert not paths.spread(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    assert not paths.spread(tmp_path / "file")  # not a directory: nothing to spread
    if Path("/dev/shm").is_dir() and not on_ext(Path("/dev/shm")):  # tmpfs: no such flag, nothing raised
        shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            assert not paths.spread(shm)
        finally:
            shm.rmdir()
