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
