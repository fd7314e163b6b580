"""Ctrl-C and SIGTERM during an install, during a probe and between cells: the right exit code,
the finished rows kept, nothing of the run left on the engine. Cells run two at a time (the
default here), except for "between", which needs a cell finished while the next is under way."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matrix.backends.engine import RUN_LABEL, DockerEngine
from tests.integration.conftest import driver_runs

MATRIX = """
bases:
  b: {{image: "{base}"}}
  # Its interpreter takes 30 s to start: the install phase of each cell lasts long enough to be hit.
  slow:
    image: "{base}"
    setup:
      - >-
        echo '#!/bin/sh' > /usr/local/bin/slowpython &&
        echo 'sleep 30' >> /usr/local/bin/slowpython &&
        echo 'exec python3 "$@"' >> /usr/local/bin/slowpython &&
        chmod +x /usr/local/bin/slowpython
    python: /usr/local/bin/slowpython
packages:
  numpy: ["1.26.4", "2.2.6"]
modes: [together]
"""
# A registry whose probe sleeps: the probe phase of each cell lasts long enough to be hit.
SLOW_REGISTRY = """
- issue: slow_probe
  error: "never printed by anything"
  cause: "a test's probe that takes its time"
  solution: "none needed"
  probe: "import time; time.sleep(60)"
"""


def _wait_for(phase: str, proc: subprocess.Popen[str], engine: DockerEngine, run_id: str) -> None:
    assert proc.stdout is not None
    if phase == "between":
        while "pass in" not in (line := proc.stdout.readline()):
            assert line, "the run ended before its first cell finished"
        return
    seen = []
    while not (line := proc.stdout.readline()).startswith("[1/2]"):
        seen.append(line)
        assert line, f"the run ended before its first cell: {''.join(seen)}"
    if phase == "install":
        time.sleep(4)  # uv venv is asking the slow interpreter about itself
        return
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the probe driver of the first cell is running
        if driver_runs(engine, run_id):
            time.sleep(2)
            return
        time.sleep(0.5)
    pytest.fail("no probe driver ever ran")


@pytest.mark.parametrize("phase", ["install", "probe", "between"])
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_run_cleanly(base_image: str, tmp_path: Path, engine: DockerEngine,
                                       sig: signal.Signals, code: int, phase: str) -> None:
    config = tmp_path / "matrix.yaml"
    config.write_text(MATRIX.format(base=base_image))
    args = {"install": ["--select", "slow-*"], "probe": ["--select", "b-*", "--registry", str(tmp_path / "slow.yaml")],
            "between": ["--select", "b-*", "--jobs", "1"]}[phase]
    (tmp_path / "slow.yaml").write_text(SLOW_REGISTRY)
    with subprocess.Popen(
        [sys.executable, "-m", "matrix", "run", "--config", str(config), "--results", str(tmp_path / "r"), "--rerun",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # A shell's background job inherits SIGINT ignored; a user at a terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().split()[2].rstrip(":")
        _wait_for(phase, proc, engine, run_id)
        proc.send_signal(sig)
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == code, out
    assert "interrupted" in out
    api = engine.client.api
    filters = {"label": f"{RUN_LABEL}={run_id}"}
    assert api.containers(all=True, filters=filters) == []
    assert api.images(all=True, filters=filters) == []
    rows = [r for r in (tmp_path / "r" / "matrix.csv").read_text().splitlines() if ",not-run," not in r]
    assert len(rows) == (2 if phase == "between" else 1)  # header, and the finished cell (the others: not run)
