"""The engine's two ways of asking: the standard library on the local socket (what an unchanged
re-run uses, without importing the SDK) and the docker SDK must give the same answers."""

from __future__ import annotations

import subprocess
import sys
import threading

import docker
import pytest

from matrix import probing
from matrix.backends.engine import HOST_LABEL, PROBE, ROLE_LABEL, RUN_LABEL, AgentGone, DockerEngine, EngineFault
from matrix.probing import RunResult


def test_the_socket_and_the_sdk_answer_alike(engine: DockerEngine, base_image: str) -> None:
    sdk = DockerEngine(client=docker.from_env())
    on_socket = DockerEngine()
    engine.client.api.create_container(base_image, ["true"], labels={RUN_LABEL: "engine-test",
                                                                     HOST_LABEL: "engine-test-host"})
    try:
        assert on_socket._socket is not None and sdk._socket is None
        assert on_socket.description == sdk.description
        for ref in (base_image, "compat-matrix-test/never-built:x", "sha256:" + "0" * 64):
            assert on_socket.image_id(ref) == sdk.image_id(ref), ref
        assert on_socket.image_id(base_image) is not None
        assert on_socket.runs_of_host("engine-test-host") == sdk.runs_of_host("engine-test-host") == {"engine-test"}
        assert on_socket.alive() and sdk.alive()
        assert on_socket.remove_labelled("engine-test") == 1
        assert sdk.runs_of_host("engine-test-host") == set()
    finally:
        engine.remove_labelled("engine-test")
        sdk.close()
        on_socket.close()


def test_asking_loads_no_sdk(engine: DockerEngine) -> None:
    # (the fixture: an engine to ask)
    code = ("import sys; from matrix.backends.engine import DockerEngine; e = DockerEngine(); "
            "e.image_id('compat-matrix-test/never-built:x'); e.runs_of_host('nobody'); e.alive(); "
            "print('docker' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_clock_makes_a_timeout_and_the_engines_own_doings_are_faults(engine: DockerEngine,
                                                                               base_image: str) -> None:
    labels = {RUN_LABEL: "engine-test-faults", ROLE_LABEL: PROBE}
    kw = {"environment": {}, "labels": labels, "memory": "256m"}
    try:
        # A command that outruns its limit by the clock: a timeout.
        ran = engine.run(base_image, ["sleep", "60"], timeout_s=2, **kw)
        assert ran.timed_out and ran.exit_code is None
        # A container the engine is told to kill (docker kill, as the engine stopping does): no verdict.
        api = engine.client.api

        def kill_it() -> None:
            for _ in range(100):
                running = api.containers(filters={"label": "org.compat-matrix.run=engine-test-faults"})
                if running:
                    api.kill(running[0]["Id"])
                    return
                threading.Event().wait(0.1)

        killer = threading.Thread(target=kill_it)
        killer.start()
        with pytest.raises(EngineFault, match="stopped from outside"):
            engine.run(base_image, ["sleep", "60"], timeout_s=120, **kw)
        killer.join()
        # An exec the runtime could not start (exit code 126, its own message): the engine's, not the command's.
        bench = api.create_container(base_image, ["sleep", "60"], labels=labels)["Id"]
        api.start(bench)
        with pytest.raises(EngineFault, match="OCI runtime exec failed"):
            engine.exec(bench, ["/opt/compat-matrix/bin/uv", "pip", "install", "numpy"])
        assert engine.exec(bench, ["sh", "-c", "echo said; exit 3"]).exit_code == 3  # the command's own
    finally:
        engine.remove_labelled("engine-test-faults")


def test_a_workbenchs_agent_runs_its_commands_and_one_that_is_gone_is_said_so(engine: DockerEngine,
                                                                              base_image: str, tmp_path) -> None:
    # The real agent, in a container of the base with the probes directory copied in (the prefix
    # image has it at the same place).
    labels = {RUN_LABEL: "integration-agent"}
    bench = engine.start(base_image, ["sh", "-c", "mkdir -p /probes; while [ ! -f /probes/go ]; do sleep 0.05; done; "
                                      "exec python3 -I /probes/_workbench.py"], labels=labels, volumes={}, agent=True)
    try:
        engine.put_files(bench, {"/probes/_workbench.py": probing.probes_dir() / "_workbench.py", "/probes/go": b""})
        ran = engine.exec(bench, ["sh", "-c", 'printf "%s" "$ADDED"; printf err >&2; exit 5'], {"ADDED": "x y"})
        assert (ran.exit_code, ran.stdout, ran.stderr) == (5, "x y", "err")
        big = engine.exec(bench, ["python3", "-c", "import sys; sys.stdout.write('x' * (3 << 20))"])
        assert big.exit_code == 0 and len(big.stdout) == 3 << 20  # many frames of the engine's stream
        with pytest.raises(EngineFault, match="could not start it"):
            engine.exec(bench, ["/no/such/program"])
        assert engine.exec(bench, ["true"]).exit_code == 0  # that was its answer: it goes on
        # Commands of two threads side by side (the workers share a workbench): the first waits for
        # the second's file, and gives up (exit 9) if the agent ran them one at a time.
        waiting: dict[str, RunResult] = {}
        first = threading.Thread(target=lambda: waiting.update(ran=engine.exec(bench, ["sh", "-c", (
            "i=0; while [ ! -e /tmp/go ]; do i=$((i+1)); [ $i -gt 500 ] && exit 9; sleep 0.01; done; echo one")])))
        first.start()
        assert engine.exec(bench, ["sh", "-c", "sleep 0.2; touch /tmp/go; echo two"]).stdout == "two\n"
        first.join(30)
        assert (waiting["ran"].exit_code, waiting["ran"].stdout) == (0, "one\n")
        as_nobody = engine.exec(bench, ["id", "-u"], user="65534")  # with a user: an exec of the engine's
        assert as_nobody.stdout.strip() == "65534"
        assert engine.exec(bench, ["sh", "-c", "kill -9 1; echo on"]).stdout == "on\n"  # PID 1 of its namespace
        engine.client.api.kill(bench)  # from outside, it is not
        with pytest.raises(AgentGone, match="agent ended"):
            engine.exec(bench, ["true"])
        with pytest.raises(AgentGone, match="agent ended"):  # lost for good
            engine.exec(bench, ["true"])
    finally:
        engine.remove_labelled("integration-agent")
