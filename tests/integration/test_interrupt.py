"""Ctrl-C and SIGTERM in the middle of a build: the right exit code, finished rows kept, nothing
of the run left on the engine."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matrix.engine import RUN_LABEL, DockerEngine

MATRIX = """
bases:
  b: {{image: "{base}"}}
packages:
  numpy: ["1.26.4", "2.2.6"]
modes: [together]
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_a_build_cleans_up(base_image: str, tmp_path: Path, engine: DockerEngine,
                                         sig: signal.Signals, code: int) -> None:
    config = tmp_path / "matrix.yaml"
    config.write_text(MATRIX.format(base=base_image))
    with subprocess.Popen(
        [sys.executable, "-m", "matrix", "run", "--config", str(config), "--results", str(tmp_path / "r")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # A shell's background job inherits SIGINT ignored; a user at a terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        run_id = first.split()[2].rstrip(":")
        while not (line := proc.stdout.readline()).startswith("[1/2]"):
            assert line, "the run ended before its first cell"
        time.sleep(4)  # inside the first cell's build: the venv and pip steps are under way
        proc.send_signal(sig)
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == code, out
    assert "interrupted" in out
    api = engine.client.api
    filters = {"label": f"{RUN_LABEL}={run_id}"}
    assert api.containers(all=True, filters=filters) == []
    assert api.images(all=True, filters=filters) == []
    assert (tmp_path / "r" / "matrix.csv").is_file()
