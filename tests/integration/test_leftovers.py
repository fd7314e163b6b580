"""A new run removes what dead runs left (SIGKILL skips every cleanup), never a live run's, nor a
--keep run's venvs. Whether a run is alive is read on the engine (its workbench runs while its
process lives), so runs of other state directories (another HOME, another user) are judged alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from matrix import spec
from matrix.backends.docker import CACHE_LABELS, CACHE_VOLUME, KEEP_MARK, DockerBackend
from matrix.backends.engine import HOST_LABEL, PROBE, ROLE_LABEL, RUN_LABEL, DockerEngine

# A run's process, as far as the engine can tell: it starts a workbench and lives on.
HOLDER = """
import sys, time
from matrix.backends.prober import IDLE
from matrix.backends.engine import HOST_LABEL, ROLE_LABEL, RUN_LABEL, WORKBENCH, DockerEngine
e = DockerEngine()
print(e.start(sys.argv[1], IDLE, labels={RUN_LABEL: sys.argv[2], ROLE_LABEL: WORKBENCH, HOST_LABEL: "elsewhere"},
              volumes={}), flush=True)
time.sleep(900)
"""
BOUND_S = 60  # how long the engine may take to notice a holder gone (a bound, not a timing)


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # This process's state directory is one nobody else uses: liveness must not depend on it.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def _holder(base_image: str, run_id: str, home: Path) -> tuple[subprocess.Popen[str], str]:
    """A run's process in another state directory, holding a workbench: (process, container id)."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, base_image, run_id], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _status(engine: DockerEngine, container: str) -> str:
    return str(engine.client.api.inspect_container(container)["State"]["Status"])


def _wait_status(engine: DockerEngine, container: str, status: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while _status(engine, container) != status:
        assert time.monotonic() < deadline, f"{container[:12]} is still {_status(engine, container)}"
        time.sleep(0.2)


def test_a_workbench_lives_exactly_as_long_as_its_runs_process(engine: DockerEngine, base_image: str,
                                                               tmp_path: Path) -> None:
    proc, bench = _holder(base_image, "holder-run", tmp_path / "other-home")
    try:
        assert _status(engine, bench) == "running"
        assert engine.live_runs().get("holder-run") is True
        proc.send_signal(signal.SIGKILL)  # no cleanup of any kind
        proc.wait(timeout=30)
        _wait_status(engine, bench, "exited")
        assert engine.live_runs().get("holder-run") is False
    finally:
        _end(proc)
        engine.remove_labelled("holder-run")


def test_dead_runs_are_reaped_and_live_ones_kept_whatever_their_state_directory(
        engine: DockerEngine, base_image: str, tmp_path: Path) -> None:
    api = engine.client.api
    live, live_bench = _holder(base_image, "live-run", tmp_path / "home-live")
    dead, dead_bench = _holder(base_image, "dead-run", tmp_path / "home-dead")
    # The dead run's probe container outlives it (its probe still running when the run was killed).
    probe = api.create_container(base_image, ["sleep", "300"], labels={RUN_LABEL: "dead-run", ROLE_LABEL: PROBE,
                                                                       HOST_LABEL: "elsewhere"})["Id"]
    try:
        api.start(probe)
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=30)
        _wait_status(engine, dead_bench, "exited")
        (tmp_path / "m.yaml").write_text(textwrap.dedent(f"""
            bases: {{b: {{image: "{base_image}"}}}}
            packages: {{numpy: ["1.26.4"]}}
        """))
        backend = DockerBackend(engine, spec.load(tmp_path / "m.yaml"), "new-run")
        notes = backend.start()
        assert notes == ["removed 2 object(s) left on the engine by dead run dead-run"]
        ids = {c["Id"] for c in api.containers(all=True, filters={"label": f"{HOST_LABEL}=elsewhere"})}
        assert ids == {live_bench}
        assert _status(engine, live_bench) == "running"
    finally:
        for p in (live, dead):
            _end(p)
        engine.remove_labelled("live-run")
        engine.remove_labelled("dead-run")


def _on_volume(engine: DockerEngine, base_image: str, script: str) -> str:
    engine.ensure_volume(CACHE_VOLUME, CACHE_LABELS)
    out = engine.client.containers.run(base_image, ["sh", "-c", script], remove=True, network_mode="none",
                                       volumes={CACHE_VOLUME: {"bind": "/cache", "mode": "rw"}},
                                       labels={RUN_LABEL: "integration-look"})
    return out.decode()


def test_a_run_reaps_dead_runs_venvs_never_a_live_or_kept_ones(engine: DockerEngine, base_image: str,
                                                               tmp_path: Path) -> None:
    """On the package cache volume: a dead run's venvs go; a live run's (another state directory)
    and a --keep run's stay, however long they have been left alone."""
    names = ("it-dead-run", "it-kept-run", "it-live-run")
    live, _ = _holder(base_image, "it-live-run", tmp_path / "home-live")
    try:
        _on_volume(engine, base_image, " && ".join(
            [f"mkdir -p /cache/venvs/{n}/abc123 && touch -d '1 hour ago' /cache/venvs/{n}" for n in names]
            + [f"touch /cache/venvs/it-kept-run/{KEEP_MARK} && touch -d '1 hour ago' /cache/venvs/it-kept-run"]))
        (tmp_path / "m.yaml").write_text(f'bases: {{b: {{image: "{base_image}"}}}}\npackages: {{numpy: ["1.26.4"]}}\n')
        env = dict(os.environ, HOME=str(tmp_path / "home-new"), XDG_STATE_HOME=str(tmp_path / "home-new" / "state"))
        proc = subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(tmp_path / "m.yaml"),
                               "--results", str(tmp_path / "r"), "--backend", "docker", "--rerun"],
                              capture_output=True, text=True, timeout=900, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        left = _on_volume(engine, base_image, "ls -A /cache/venvs").split()
        assert "it-dead-run" not in left
        assert "it-kept-run" in left and "it-live-run" in left
    finally:
        _end(live)
        engine.remove_labelled("it-live-run")
        _on_volume(engine, base_image, "rm -rf " + " ".join(f"/cache/venvs/{n}" for n in names))


SLOW_REGISTRY = """
- issue: slow_probe
  error: "never printed by anything"
  cause: "a test's probe that keeps the first run's cell in its probe phase"
  solution: "none needed"
  probe: "import time; time.sleep(20)"
"""


def test_two_sweeps_at_once_from_two_state_directories_keep_out_of_each_others_way(
        base_image: str, tmp_path: Path, engine: DockerEngine) -> None:
    """Two users (two HOMEs, two state directories) on one engine: the second starts while the
    first's probe runs, and neither takes the other's objects or venvs for a dead run's."""
    (tmp_path / "m.yaml").write_text(f'bases: {{b: {{image: "{base_image}"}}}}\npackages: {{numpy: ["1.26.4"]}}\n')
    (tmp_path / "slow.yaml").write_text(SLOW_REGISTRY)

    def start(i: int, *extra: str) -> subprocess.Popen[str]:
        home = tmp_path / f"home{i}"
        env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"))
        return subprocess.Popen([sys.executable, "-m", "matrix", "run", "--config", str(tmp_path / "m.yaml"),
                                 "--results", str(tmp_path / f"r{i}"), "--backend", "docker", "--rerun", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    first = start(1, "--registry", str(tmp_path / "slow.yaml"))
    procs = [first]
    try:
        assert first.stdout is not None
        run_id = first.stdout.readline().split()[2].rstrip(":")
        deadline = time.monotonic() + 600
        probe = {"label": [f"{RUN_LABEL}={run_id}", f"{ROLE_LABEL}={PROBE}"]}
        while not engine.client.api.containers(filters=probe):
            assert time.monotonic() < deadline and first.poll() is None, "the first run's probe never ran"
            time.sleep(0.3)
        procs.append(start(2))
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            _end(p)
    outs[0] = f"compat-matrix run {run_id}:" + outs[0]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("1/1 cells: 1 pass" in out for out in outs), outs
    assert "dead run" not in outs[1], outs[1]
    run_ids = [out.split()[2].rstrip(":") for out in outs]
    assert run_ids[0] != run_ids[1]
    for rid in run_ids:
        assert not engine.client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={rid}"})
        assert not engine.client.api.images(all=True, filters={"label": f"{RUN_LABEL}={rid}"})
