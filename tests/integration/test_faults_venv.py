"""Real faults under a venv-backend run: each leaves its cells infra-error (no verdict), the run
exits 3, the result cache keeps nothing for them, and a later `--resume` with the fault mended
runs exactly those cells.

The faults are the real thing: the installer killed with SIGKILL while it downloads, uv's cache
directory on a full tmpfs and on a read-only bind mount (mounted here: these tests need root),
the log directory replaced by a file. Every run has a time bound, so a hang fails the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrix.backends import interpreters

MATRIX = "bases: {py311: {python: '3.11'}}\npackages: {numpy: ['1.26.4', '2.2.6']}\n"
CELLS = ("py311-numpy1.26.4-together", "py311-numpy2.2.6-together")
# A run's bound: two cells, each infra-error retried after 10 s and 60 s, downloads from a cold cache.
BOUND_S = 600


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if interpreters.find("3.11") is None:
        pytest.fail("python3.11 is needed for these tests (pyenv has it on our machines)")
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    return tmp_path


def _env(project: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, COMPAT_MATRIX_CACHE=str(project / "cache"),
               DOCKER_HOST=f"unix://{project}/no-engine.sock", **extra)
    env.pop("UV_CACHE_DIR", None)
    env.update(extra)
    return env


def _args(project: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "matrix", "run", "--config", str(project / "matrix.yaml"),
            "--results", str(project / "results"), "--backend", "venv", "--jobs", "1", *more]


def run(project: Path, *more: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_args(project, *more), capture_output=True, text=True, timeout=BOUND_S,
                          env=_env(project, **env))


def _records(project: Path) -> dict[str, dict[str, object]]:
    path = project / "results" / "records.jsonl"
    if not path.is_file():
        return {}
    return {r["cell"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def _cached_cells(project: Path) -> set[str]:
    return {json.loads(p.read_text())["cell"] for p in (project / "cache" / "results").rglob("*.json")}


def _ran(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The cells the run ran (its progress lines), not those kept or answered from the cache."""
    return re.findall(r"^\[\s*\d+/\d+\] (\S+) \.\.\.", proc.stdout, re.MULTILINE)


def assert_no_verdict_then_resumed(project: Path, proc: subprocess.CompletedProcess[str], faulted: set[str],
                                   error: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    records = _records(project)
    for cell in faulted:
        assert cell not in records or records[cell]["outcome"] == "infra-error", out
    infra = [r for r in records.values() if r["outcome"] == "infra-error"]
    assert infra and all(error in str(r["error"]) for r in infra), out
    assert not faulted & _cached_cells(project), "an infra-error was kept in the result cache"
    for cell in set(CELLS) - faulted:
        assert records[cell]["outcome"] == "pass", out
    resumed = run(project, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(_ran(resumed)) == sorted(faulted), resumed.stdout
    assert {c: r["outcome"] for c, r in _records(project).items()} == dict.fromkeys(CELLS, "pass")


def _children(pid: int) -> Iterator[tuple[int, bytes]]:
    """(pid, command line) of the processes whose parent is `pid`."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            yield int(entry.name), cmdline


def test_an_installer_killed_with_sigkill_is_infra_error(project: Path) -> None:
    """The OOM killer's way: SIGKILL, no output. Every install of numpy 2.2.6 (the retries too) is
    killed while it runs, from a cold package cache so it is downloading; the other cell passes."""
    proc = subprocess.Popen(_args(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(project, UV_CACHE_DIR=str(project / "uv-cache")))
    kills: list[int] = []
    done = threading.Event()

    def killer() -> None:
        while not done.is_set():
            for pid, cmdline in _children(proc.pid):
                args = cmdline.split(b"\0")
                if b"install" in args and b"numpy==2.2.6" in args:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass
            done.wait(0.002)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        stdout, stderr = proc.communicate(timeout=BOUND_S)
    finally:
        done.set()
        proc.kill()
        t.join(10)
    assert kills, "no install of numpy 2.2.6 was seen to kill"
    ended = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_no_verdict_then_resumed(project, ended, {"py311-numpy2.2.6-together"},
                                   "the installer was killed by SIGKILL")


def _root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("these tests mount file systems: run them as root")
        pytest.skip("mounting a file system needs root")


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=False, capture_output=True, timeout=60)


def test_uv_cache_on_a_full_tmpfs_is_infra_error_and_stops_the_sweep(project: Path) -> None:
    _root()
    full = project / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True, timeout=60)
    try:
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # full to the last block
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as e:
            assert e.errno == 28
        finally:
            os.close(fd)
        proc = run(project, UV_CACHE_DIR=str(full / "uv"))
    finally:
        _umount(full)
    # A full disk stops the sweep: the second cell is not even tried, and has no verdict either.
    assert "No space left on device" in proc.stderr, proc.stdout + proc.stderr
    assert_no_verdict_then_resumed(project, proc, set(CELLS), "No space left on device")


def test_uv_cache_on_a_read_only_mount_is_infra_error(project: Path) -> None:
    _root()
    source, ro = project / "cache-source", project / "read-only"
    source.mkdir()
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(ro)], check=True, timeout=60)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True, timeout=60)
        proc = run(project, UV_CACHE_DIR=str(ro / "uv"))
    finally:
        _umount(ro)
    assert_no_verdict_then_resumed(project, proc, set(CELLS), "Read-only file system (os error 30)")


def test_an_unwritable_log_directory_is_infra_error(project: Path) -> None:
    results = project / "results"
    results.mkdir()
    (results / "logs").write_text("a file where the cells' log directories go\n")
    proc = run(project)
    (results / "logs").unlink()
    assert_no_verdict_then_resumed(project, proc, set(CELLS),
                                   f"the cells' log directory {results / 'logs'} cannot be written")
