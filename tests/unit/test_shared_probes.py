"""Cells whose environments hold the same files share one probe run; the fingerprint says when."""

from __future__ import annotations

import subprocess
import threading
import venv
from pathlib import Path

import pytest

from matrix import probing
from matrix.cells import Cell
from matrix.classify import Verdict
from matrix.probing import DriverReport, Probed, SharedProbes
from matrix.store import Outcome
from tests.unit.conftest import interpreter

TOGETHER = Cell("b", "together", (("numpy", "1.26.4"),))
LAYERED = Cell("b", "layered", (("numpy", "1.26.4"),))


def make_env(where: Path, records: dict[str, str]) -> Path:
    """A real venv (no pip, no network) with hand-written dist-info RECORDs in its site-packages."""
    venv.create(where, with_pip=False)
    site = next(where.glob("lib/python*/site-packages"))
    for dist, record in records.items():
        (site / f"{dist}.dist-info").mkdir()
        (site / f"{dist}.dist-info" / "RECORD").write_text(record)
    return where / "bin" / "python"


def fingerprint(python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), str(probing.probes_dir() / probing.FINGERPRINT)], capture_output=True,
                          text=True, timeout=60)


NUMPY = ("numpy/__init__.py,sha256=abc,100\nnumpy-1.26.4.dist-info/RECORD,,\nnumpy-1.26.4.dist-info/INSTALLER,"
         "sha256=uv,3\n../../../bin/f2py,sha256={script},50\nnumpy/__pycache__/x.cpython-311.pyc,,\n")


def test_the_same_files_give_the_same_fingerprint_wherever_the_venv_is(tmp_path: Path) -> None:
    a = fingerprint(make_env(tmp_path / "a", {"numpy-1.26.4": NUMPY.format(script="path-a")}))
    b = fingerprint(make_env(tmp_path / "b", {"numpy-1.26.4": NUMPY.format(script="path-b")}))
    assert a.returncode == 0 and len(a.stdout.strip()) == 64, a.stderr
    assert a.stdout == b.stdout  # scripts outside site-packages and installer bookkeeping do not count
    other = fingerprint(make_env(tmp_path / "c", {"numpy-1.26.4": NUMPY.replace("sha256=abc", "sha256=abd")}))
    assert other.stdout != a.stdout
    unhashed = fingerprint(make_env(tmp_path / "d", {"numpy-1.26.4": "numpy/__init__.py,,\n"}))
    assert unhashed.returncode == 1 and unhashed.stdout == ""  # unknown content: probed on its own


def probed(cell: Cell, log_dir: Path, outcome: Outcome = Outcome.PASS) -> Probed:
    (log_dir / "probes.jsonl").write_text('{"probe": "imports"}\n')
    return Probed(DriverReport(python="3.11.7", installed={"numpy": "1.26.4"}), Verdict(outcome), log_dir, cell.id)


def test_a_cell_with_the_same_environment_takes_the_first_cells_probe_run(tmp_path: Path) -> None:
    share = SharedProbes()
    runs: list[str] = []
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    def run(cell: Cell, log_dir: Path) -> Probed:
        runs.append(cell.id)
        return probed(cell, log_dir)

    a = share.probe(TOGETHER, "fp", first, lambda: run(TOGETHER, first))
    b = share.probe(LAYERED, "fp", second, lambda: run(LAYERED, second))
    assert runs == [TOGETHER.id] and b is a
    assert (second / "probes.jsonl").read_text() == (first / "probes.jsonl").read_text()
    assert TOGETHER.id in (second / "probes-shared-with").read_text()
    # no fingerprint, or other pins: each probes for itself
    share.probe(LAYERED, None, second, lambda: run(LAYERED, second))
    share.probe(Cell("b", "layered", (("numpy", "2.2.6"),)), "fp", second, lambda: run(LAYERED, second))
    assert runs == [TOGETHER.id, LAYERED.id, LAYERED.id]


def test_a_waiting_cell_probes_itself_when_the_first_run_failed(tmp_path: Path) -> None:
    share = SharedProbes()
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def failing() -> Probed:
        started.set()
        release.wait(10)
        raise RuntimeError("the engine went away")

    def first() -> None:
        try:
            share.probe(TOGETHER, "fp", tmp_path, failing)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    started.wait(10)
    threading.Timer(0.2, release.set).start()
    got = share.probe(LAYERED, "fp", tmp_path, lambda: probed(LAYERED, tmp_path, Outcome.IMPORT_ERROR))
    t.join(10)
    assert errors and got.verdict.outcome is Outcome.IMPORT_ERROR and got.cell == LAYERED.id


@pytest.mark.parametrize("version", ["3.6", "3.13"])
def test_the_fingerprint_script_runs_on_old_and_new_interpreters(version: str, tmp_path: Path) -> None:
    found = interpreter(version)
    env = tmp_path / "env"
    subprocess.run([found.path, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    out = fingerprint(env / "bin" / "python")
    assert out.returncode == 0 and len(out.stdout.strip()) == 64, out.stderr
