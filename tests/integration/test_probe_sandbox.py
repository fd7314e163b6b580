"""The container the probes run in, on the real engine: no network, read-only root, non-root,
a pids limit. A probe that tries to misbehave fails safely and the container is gone after."""

from __future__ import annotations

import pytest

from matrix.backends.engine import RUN_LABEL, DockerEngine

LABELS = {RUN_LABEL: "integration-sandbox"}


def run_py(engine: DockerEngine, image: str, code: str, timeout_s: float = 60):
    return engine.run(image, ["python3", "-c", code], environment={"HOME": "/tmp"}, labels=LABELS,
                      memory="256m", timeout_s=timeout_s)


@pytest.fixture(autouse=True)
def _cleanup(engine: DockerEngine):
    yield
    engine.remove_labelled("integration-sandbox")


def test_no_network(engine: DockerEngine, base_image: str) -> None:
    ran = run_py(engine, base_image, "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)")
    assert ran.exit_code != 0
    assert "Network is unreachable" in ran.stderr or "unreachable" in ran.stderr.lower()


def test_root_is_read_only_and_the_user_is_not_root(engine: DockerEngine, base_image: str) -> None:
    ran = run_py(engine, base_image, "import os; print(os.getuid()); open('/etc/x', 'w')")
    assert ran.stdout.strip() == "65534"
    assert ran.exit_code != 0 and "Read-only file system" in ran.stderr
    ok = run_py(engine, base_image, "open('/tmp/x', 'w').write('scratch space works')")
    assert ok.exit_code == 0, ok.stderr


def test_a_fork_bomb_hits_the_pids_limit(engine: DockerEngine, base_image: str) -> None:
    code = (
        "import os, time\n"
        "for i in range(5000):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "    except OSError as e:\n"
        "        print('refused after', i, e.strerror); break\n"
    )
    ran = run_py(engine, base_image, code, timeout_s=120)
    assert "refused after" in ran.stdout, ran.stdout + ran.stderr
    assert int(ran.stdout.split()[2]) < 600


def test_a_hung_probe_container_is_killed_at_the_limit(engine: DockerEngine, base_image: str) -> None:
    ran = run_py(engine, base_image, "import time; time.sleep(600)", timeout_s=5)
    assert ran.timed_out
    assert not engine.client.api.containers(all=True, filters={"label": f"{RUN_LABEL}=integration-sandbox"})


def test_memory_past_the_limit_is_an_oom_the_engine_reports(engine: DockerEngine, base_image: str) -> None:
    # A child process (as a probe is) allocates past the limit; the engine says OOM, so the cell
    # says crash for memory, and only then.
    code = ("import subprocess, sys\n"
            "subprocess.run([sys.executable, '-c', 'b = bytearray(512 * 1024 * 1024); print(len(b))'])\n")
    ran = run_py(engine, base_image, code)
    assert ran.oom_killed, ran
    from matrix.probing import DriverReport, judge

    v = judge(ran, DriverReport(python="3.11", probes=[], complete=True), "256m")
    assert v.outcome.value == "crash" and "out of memory" in v.error
    fine = run_py(engine, base_image, "b = bytearray(16 * 1024 * 1024)")
    assert fine.exit_code == 0 and not fine.oom_killed
