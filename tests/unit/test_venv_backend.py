"""The venv backend's housekeeping (its real sweeps are in tests/integration)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from matrix import locks
from matrix.venv_backend import VenvBackend


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_start_removes_venvs_of_dead_runs_only(make_spec) -> None:
    s = make_spec("bases: {py: {python: '3.11'}}\npackages: {numpy: ['1.26.4']}\n")
    dead = Path(tempfile.mkdtemp(prefix="compat-matrix-20260101T000000Z-dead00-"))
    alive = Path(tempfile.mkdtemp(prefix="compat-matrix-20260101T000000Z-a11ce0-"))
    held = locks.hold_run("20260101T000000Z-a11ce0")
    try:
        notes = VenvBackend(s, "20260101T000000Z-00aa00").start()
        assert not dead.exists() and alive.exists()
        assert notes == [f"removed {dead}, left by dead run 20260101T000000Z-dead00"]
    finally:
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
