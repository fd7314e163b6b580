"""A real fault of the tool's world under the docker backend: the Docker Engine stopped while a
probe runs. The cell is infra-error (never a timeout or a crash), the run exits 3, nothing is
kept in the result cache for it, and once the engine is back `--resume` runs exactly that cell.

The engine is stopped for real (SIGTERM to dockerd, as a host's shutdown does) and started again
the way .ci/engine-up.sh starts it, in a `finally`: the rest of the suite needs it. On CI the
new dockerd's pid goes to $COMPAT_MATRIX_DOCKERD_PIDFILE, so .ci/run's trap stops that one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from matrix.backends.engine import RUN_LABEL, DockerEngine
from matrix.errors import EngineUnavailable
from tests.integration.conftest import _unavailable, driver_runs

MATRIX = """
bases:
  b: {{image: "{base}"}}
packages:
  numpy: ["1.26.4", "2.2.6"]
modes: [together]
limits: {{timeout_s: 300, memory: 2g}}
"""
# Holds the numpy 2 cell in its probe phase long enough for the engine to be stopped under it
# (and lets it pass when it is left alone).
REGISTRY = """
- issue: slow_under_numpy2
  error: "never printed by anything"
  cause: "a test's probe that keeps the numpy 2 cell in its probe phase for a while"
  solution: "none needed"
  probe: "import time, numpy; numpy.__version__.startswith('2.') and time.sleep(25)"
"""
FAST, SLOW = "b-numpy1.26.4-together", "b-numpy2.2.6-together"
DOCKERD_PID = Path("/var/run/docker.pid")
# Bounds (not timings): a hang fails the test instead of stalling CI.
STOP_BOUND_S = 90
ANSWER_BOUND_S = 120


def _dockerd() -> tuple[int, list[str]]:
    """The local dockerd's pid and command line; skips (fails on CI) where there is none to restart."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        _unavailable(f"the engine at {host} is not a local dockerd this test can stop and start")
    try:
        pid = int(DOCKERD_PID.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except (OSError, ValueError) as e:
        _unavailable(f"no local dockerd process to stop and start ({e})")
    args = [a.decode() for a in argv]
    if not args or not os.path.basename(args[0]).startswith("dockerd") or any("fd://" in a for a in args):
        _unavailable(f"pid {pid} is not a plain background dockerd ({args}): a service manager owns it")
    if os.geteuid() != 0:
        _unavailable("stopping dockerd needs root")
    return pid, args


def _answers() -> bool:
    try:
        engine = DockerEngine()
    except EngineUnavailable:
        return False
    try:
        return engine.alive()
    finally:
        engine.close()


@contextmanager
def engine_restarted_afterwards(argv: list[str]) -> Iterator[None]:
    """Whatever happens inside, a dockerd answers afterwards: started again (as engine-up.sh does)
    if none does."""
    try:
        yield
    finally:
        if not _answers():
            # As engine-up.sh does it: a background job of a shell that exits, so the new dockerd
            # belongs to no process of this test.
            log = Path(os.environ.get("TMPDIR", "/tmp")) / "compat-matrix-dockerd.log"
            started = subprocess.run(["sh", "-c", f'{shlex.join(argv)} >>{shlex.quote(str(log))} 2>&1 </dev/null & '
                                      'echo $!'], capture_output=True, text=True, timeout=30, check=True)
            new = int(started.stdout.strip())
            pidfile = os.environ.get("COMPAT_MATRIX_DOCKERD_PIDFILE")
            if pidfile:  # CI's trap stops the engine it started: that is this one now
                Path(pidfile).write_text(f"{new}\n")
            deadline = time.monotonic() + ANSWER_BOUND_S
            while not _answers():
                assert Path(f"/proc/{new}").exists(), f"the restarted dockerd exited; see {log}"
                assert time.monotonic() < deadline, f"the restarted dockerd did not answer in {ANSWER_BOUND_S} s"
                time.sleep(1)


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_BOUND_S
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def _run_log(results: Path, run_id: str) -> dict[str, dict[str, object]]:
    lines = (results / "runs" / f"{run_id}.jsonl").read_text().splitlines()
    return {r["cell"]: r for r in map(json.loads, lines)}


def _cached_cells(cache: Path) -> set[str]:
    return {json.loads(p.read_text())["cell"] for p in (cache / "results").rglob("*.json")}


def test_the_engine_stopped_under_a_probe_is_infra_error_and_resume_runs_that_cell(
        base_image: str, engine: DockerEngine, tmp_path: Path) -> None:
    pid, argv = _dockerd()
    config, registry = tmp_path / "matrix.yaml", tmp_path / "registry.yaml"
    config.write_text(MATRIX.format(base=base_image))
    registry.write_text(REGISTRY)
    results, cache = tmp_path / "results", tmp_path / "cache"
    env = dict(os.environ, COMPAT_MATRIX_CACHE=str(cache))
    command = [sys.executable, "-m", "matrix", "run", "--config", str(config), "--registry", str(registry),
               "--results", str(results), "--backend", "docker", "--jobs", "2"]

    with engine_restarted_afterwards(argv):
        with subprocess.Popen([*command, "--rerun"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) as proc:
            assert proc.stdout is not None
            try:
                run_id = proc.stdout.readline().split()[2].rstrip(":")
                seen: list[str] = []
                while not any(f"{FAST}: pass" in line for line in seen):
                    seen.append(proc.stdout.readline())
                    assert seen[-1], f"the run ended before {FAST} passed: {''.join(seen)}"
                # The slow cell's probe driver runs (the fast cell is through: any driver in the
                # run's probers is the slow cell's): stop the engine under it.
                deadline = time.monotonic() + 600
                while not driver_runs(engine, run_id):
                    assert time.monotonic() < deadline, f"no probe driver of {SLOW} ran: {''.join(seen)}"
                    assert proc.poll() is None, "the run ended before the slow cell's probe"
                    time.sleep(0.3)
                time.sleep(2)
                _stop(pid)
                out = "".join(seen) + proc.stdout.read()
                code = proc.wait(timeout=300)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert code == 3, out
        got = _run_log(results, run_id)
        assert got[FAST]["outcome"] == "pass", out
        assert got[SLOW]["outcome"] == "infra-error", out
        assert "engine" in str(got[SLOW]["error"]).lower(), got[SLOW]
        assert "timeout" not in str(got[SLOW]["error"]).lower()
        # Nothing kept in the result cache for it; the finished cell is.
        assert _cached_cells(cache) == {FAST}

    # The engine answers again: --resume runs exactly the cell without a verdict, and removes
    # what the stopped run left on the engine.
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=900, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    second = resumed.stdout.split()[2].rstrip(":")
    assert list(_run_log(results, second)) == [SLOW]
    assert _run_log(results, second)[SLOW]["outcome"] == "pass"
    assert f"dead run {run_id}" in resumed.stdout
    api = engine.client.api
    assert api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}) == []
    assert _cached_cells(cache) == {FAST, SLOW}


@pytest.fixture(autouse=True)
def _engine_answers_after() -> Iterator[None]:
    """Belt and braces: whatever this module did, the rest of the suite finds the engine up."""
    yield
    assert _answers(), "the engine does not answer after the fault tests"


# What waits for a probe run: a one-shot probe container's wait, or the start of a probe driver's
# exec into a prober (its exec id is learnt from the answer to the exec's creation).
_WAIT = re.compile(rb"/containers/[0-9a-f]+/wait")
_EXEC_CREATE = re.compile(rb"/containers/[0-9a-f]+/exec$")
_EXEC_START = re.compile(rb"/exec/([0-9a-f]+)/start")
_EXEC_ID = re.compile(rb'"Id":\s*"([0-9a-f]+)"')


class _Proxy:
    """A TCP front for the engine's unix socket, as a remote engine or an SSH tunnel is: real
    connections, of which the test drops the ones waiting for a probe run while the engine stays
    up. The engine's answers on those are held back (a connection that goes before its answer
    comes, as a middlebox's does): the client sees the connection end with no answer at all."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket, list[bytes]]] = []
        self.drivers: set[bytes] = set()  # the exec ids of probe drivers
        self.holding = True  # until the first drop; then the engine's answers all pass
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(self.target)
            last: list[bytes] = [b"", b""]  # the request's path; "driver" while a driver's exec is created
            with self._lock:
                self._conns.append((client, engine, last))
            threading.Thread(target=self._pump, args=(client, engine, last, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(engine, client, last, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, last: list[bytes], answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if not answers:
                    if m := re.match(rb"(?:GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/", data):
                        last[0], last[1] = m.group(1).split(b"?")[0], b""
                    if _EXEC_CREATE.search(last[0]) and b"_driver.py" in data:
                        last[1] = b"driver"
                elif last[1] == b"driver" and (found := _EXEC_ID.search(data)):
                    self.drivers.add(found.group(1))
                    last[1] = b""
                if answers and self.holding and self._waits(last[0]):
                    continue  # held back
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _waits(self, path: bytes) -> bool:
        start = _EXEC_START.search(path)
        return bool(_WAIT.search(path)) or (start is not None and start.group(1) in self.drivers)

    def waiting(self) -> list[tuple[socket.socket, socket.socket, list[bytes]]]:
        with self._lock:
            return [c for c in self._conns if self._waits(c[2][0])]

    def drop(self, conns: list[tuple[socket.socket, socket.socket, list[bytes]]]) -> None:
        self.holding = False
        for client, engine, _ in conns:
            for s in (client, engine):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Every connection ends and is closed (an unclosed socket is a warning, an error here)."""
        self.server.close()
        with self._lock:
            self.drop(self._conns)
            for client, engine, _ in self._conns:
                client.close()
                engine.close()


def test_a_dropped_connection_while_waiting_for_a_probe_is_infra_not_a_timeout(
        base_image: str, engine: DockerEngine, tmp_path: Path) -> None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        _unavailable(f"the engine at {host} has no local socket to put a proxy in front of")
    config, registry = tmp_path / "matrix.yaml", tmp_path / "registry.yaml"
    config.write_text(MATRIX.format(base=base_image))
    registry.write_text(REGISTRY)
    results, cache = tmp_path / "results", tmp_path / "cache"
    proxy = _Proxy(host[len("unix://"):])
    env = dict(os.environ, COMPAT_MATRIX_CACHE=str(cache), DOCKER_HOST=f"tcp://127.0.0.1:{proxy.port}")
    try:
        with subprocess.Popen([sys.executable, "-m", "matrix", "run", "--config", str(config), "--registry",
                               str(registry), "--results", str(results), "--backend", "docker", "--select", SLOW],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            try:
                deadline = time.monotonic() + 600
                while not (waiting := proxy.waiting()):  # the slow cell's probe run is being waited for
                    assert time.monotonic() < deadline and proc.poll() is None, "no probe was ever waited for"
                    time.sleep(0.2)
                time.sleep(2)
                proxy.drop(waiting)  # once: the engine stays up, and the cell's retry gets its verdict
                assert proc.stdout is not None
                out = proc.stdout.read()
                code = proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        proxy.close()
    # The dropped wait was no verdict: the cell was run again, and only that run's verdict counts.
    assert f"{SLOW}: infra-error (running the probe driver in " in out and "dropped the connection" in out, out
    assert "again in 10s" in out and "timeout" not in out, out
    assert code == 0, out
    assert _cached_cells(cache) == {SLOW}
    [cached] = [json.loads(p.read_text()) for p in (cache / "results").rglob("*.json")]
    assert cached["outcome"] == "pass"
