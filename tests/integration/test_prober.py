"""Probers on the real engine: a long-lived container per worker that each cell's probe driver is
exec'd into. Locked down as a one-shot probe container is, and nothing one run does (a memory
limit met, processes left behind, files in /tmp, a kill of everything it can reach, a hang) touches
the next run's verdict in the same prober. The whole path (the real driver, its own count of OOM
kills, the background clean-up) is the sweep test at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrix import probing
from matrix.backends import prober
from matrix.backends.engine import RUN_LABEL, DockerEngine, Sandbox
from matrix.backends.prober import Ending, Probers
from matrix.probing import RunResult

LABELS = {RUN_LABEL: "integration-prober"}


@pytest.fixture
def probers(engine: DockerEngine, base_image: str) -> Iterator[Probers]:
    yield Probers(engine, base_image, labels=LABELS, volumes={}, sandbox=Sandbox("256m"))
    engine.remove_labelled("integration-prober")


def run_py(probers: Probers, code: str, timeout_s: float = 60) -> tuple[RunResult, str]:
    # No driver here, so no count of its own: every run is judged on the clean-up's count.
    return probers.run(["python3", "-c", code], {"HOME": "/tmp"}, timeout_s, lambda ran: None)


def test_a_prober_is_locked_down_as_a_probe_container_is(probers: Probers) -> None:
    ran, _ = run_py(probers, "import os, socket\n"
                             "print(os.getuid(), os.getgid())\n"
                             "try:\n    open('/etc/x', 'w')\nexcept OSError as e:\n    print(e.strerror)\n"
                             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
                             "except OSError as e:\n    print('no network:', e.strerror)\n"
                             "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n")
    uid, read_only, network, caps = ran.stdout.splitlines()
    assert uid == "65534 65534" and read_only == "Read-only file system", ran
    assert network.startswith("no network:") and "unreachable" in network.lower()
    assert int(caps, 16) == 0


def test_a_run_that_meets_the_memory_limit_is_an_oom_and_the_next_run_in_the_prober_is_not(
        probers: Probers) -> None:
    oom, first = run_py(probers, "import subprocess, sys\n"
                                 "subprocess.run([sys.executable, '-c', 'b = bytearray(512 * 1024 * 1024)'])\n")
    assert oom.oom_killed, oom
    fine, second = run_py(probers, "b = bytearray(16 * 1024 * 1024); print('fine')")
    assert second == first and fine.stdout.strip() == "fine" and not fine.oom_killed, fine


# What a run leaves: a daemon in a session of its own, files and an unreadable directory in /tmp
# and /dev/shm.
LEAVE = """
import os, subprocess
subprocess.Popen(['sleep', '300'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for d in ('/tmp', '/dev/shm'):
    open(d + '/.left', 'w').write('x')
    os.makedirs(d + '/locked/deeper')
    os.chmod(d + '/locked', 0)
"""
# What the last run left in the prober: /tmp, /dev/shm and the processes of the probes' user.
LEFT = ("import os\n"
        "mine = [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()\n"
        "        and os.stat('/proc/' + p).st_uid == os.getuid()]\n"
        "print(sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm')), mine)\n")


def test_what_a_run_leaves_behind_is_gone_before_the_next(probers: Probers) -> None:
    left, first = run_py(probers, LEAVE)
    assert left.exit_code == 0, left
    seen, second = run_py(probers, LEFT)
    assert second == first and seen.stdout.strip() == "[] [] []", seen


def test_a_run_that_kills_all_it_can_does_not_take_the_prober_down(probers: Probers) -> None:
    killed, first = run_py(probers, "import os, signal; os.kill(-1, signal.SIGKILL); print('still here')")
    assert killed.stdout.strip() == "still here", killed
    after, second = run_py(probers, "print('next')")
    assert second == first and after.stdout.strip() == "next"


def test_a_hung_run_is_stopped_at_its_limit_and_the_prober_goes_on(probers: Probers) -> None:
    hung, first = run_py(probers, "import time; time.sleep(600)", timeout_s=3)
    assert hung.timed_out and not hung.oom_killed, hung
    after, second = run_py(probers, "print('next')")
    assert second == first and after.stdout.strip() == "next" and not after.timed_out


# The same as a probe, which then passes.
LEAVER = LEAVE + """import json
json.dump({"status": "pass", "checks": []}, open(os.environ["COMPAT_MATRIX_RESULT"], "w"))
"""


def test_the_real_driver_cleans_its_prober_up_itself_and_no_clean_up_exec_runs(
        engine: DockerEngine, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context = tmp_path / "ctx"
    (context / "probes").mkdir(parents=True)
    for name in ("_driver.py", "_probe.py"):
        (context / "probes" / name).write_bytes((probing.probes_dir() / name).read_bytes())
    (context / "probes" / "leaver.py").write_text(LEAVER)
    (context / "Dockerfile").write_text(f"FROM {base_image}\nLABEL {RUN_LABEL}=integration-prober\n"
                                        "COPY probes /probes\n")
    image = "compat-matrix-test/prober-driver:integration"
    assert engine.build(context, image).ok
    cleans: list[str] = []
    exec_ = engine.exec

    def counting(container: str, command: list[str], *args, **kwargs):  # type: ignore[no-untyped-def]
        if command == ["sh", "-c", prober.CLEAN]:
            cleans.append(container)
        return exec_(container, command, *args, **kwargs)

    monkeypatch.setattr(engine, "exec", counting)
    probers = Probers(engine, image, labels=LABELS, volumes={}, sandbox=Sandbox("256m"))
    try:
        nonce = probing.new_nonce()
        environment = {"COMPAT_MATRIX_NONCE": nonce, "COMPAT_MATRIX_PROBES": "leaver", "HOME": "/tmp"}

        def counted(ran: RunResult) -> Ending | None:
            report = probing.parse(ran.stdout, nonce)
            assert ran.exit_code == 0 and report.complete and report.oom_kills == 0, ran
            assert report.cleaned and report.oom_total is not None, ran
            return Ending(report.oom_kills, report.oom_total)

        ran, first = probers.run(["python3", "/probes/_driver.py"], environment, 120, counted)
        assert [p["result"]["status"] for p in probing.parse(ran.stdout, nonce).probes] == ["pass"], ran
        assert cleans == [first]  # the one when the prober started: none after the driver's run
        seen, second = run_py(probers, LEFT)
        assert second == first and seen.stdout.strip() == "[] [] []", seen
    finally:
        engine.remove_labelled("integration-prober")


MATRIX = """
bases:
  b: {{image: "{base}"}}
packages:
  numpy: ["1.26.4", "2.2.6"]
modes: [together]
limits: {{timeout_s: 120, memory: 512m}}
"""
# The numpy 1 cell's probes allocate past the memory limit; the numpy 2 cell's do not.
REGISTRY = """
- issue: greedy_under_numpy1
  error: "never printed by anything"
  cause: "a test's probe that meets the memory limit under numpy 1"
  solution: "none needed"
  probe: "import numpy; numpy.__version__.startswith('1.') and bytearray(900 * 1024 * 1024)"
"""


def test_an_oom_cell_then_a_passing_cell_in_the_same_prober(base_image: str, tmp_path: Path) -> None:
    config, registry = tmp_path / "matrix.yaml", tmp_path / "registry.yaml"
    config.write_text(MATRIX.format(base=base_image))
    registry.write_text(REGISTRY)
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(config), "--registry",
                           str(registry), "--results", str(results), "--backend", "docker", "--jobs", "1", "--rerun"],
                          capture_output=True, text=True, timeout=1200,
                          env=dict(os.environ, COMPAT_MATRIX_CACHE=str(tmp_path / "cache")))
    records = {r["cell"]: r for r in map(json.loads, (results / "records.jsonl").read_text().splitlines())}
    oom, fine = records["b-numpy1.26.4-together"], records["b-numpy2.2.6-together"]
    assert oom["outcome"] == "crash" and "out of memory" in oom["error"], done.stdout + done.stderr
    assert fine["outcome"] == "pass", done.stdout + done.stderr
    probed_in = {(results / "logs" / cell / "prober").read_text() for cell in records}
    assert len(probed_in) == 1, probed_in
