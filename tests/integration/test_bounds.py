"""The bounds audit on real installs (venv backend, real index): scipy 1.11.4's numpy<1.28 is needed
(forced past it, scipy.stats dies), scipy 1.9.3's numpy<1.26 is too strict (forced past it, it runs)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from matrix.backends import interpreters

MATRIX = """
bases:
  py311: {python: "3.11"}
packages:
  numpy: ["1.26.4", "2.2.6"]
  scipy: ["1.11.4", "1.14.1"]
modes: [together, override]
include:
  - {base: py311, mode: together, numpy: "1.26.4", scipy: "1.9.3"}
  - {base: py311, mode: override, numpy: "1.26.4", scipy: "1.9.3"}
"""


def cm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", *args], capture_output=True, text=True, timeout=900)


def test_declared_bounds_are_judged_by_what_runs(tmp_path: Path) -> None:
    if interpreters.find("3.11") is None:
        pytest.fail("python3.11 is needed (pyenv has it on our machines)")
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(MATRIX))
    results = tmp_path / "results"
    ran = cm("run", "--config", str(tmp_path / "matrix.yaml"), "--results", str(results), "--backend", "venv")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    audit = cm("bounds", "--results", str(results), "--format", "json")
    assert audit.returncode == 0, audit.stderr
    found = {f["requirement"]: f for f in json.loads(audit.stdout)["bounds"]}
    assert found["scipy 1.11.4: numpy>=1.21.6,<1.28.0"]["verdict"] == "needed"
    assert "numpy.dtype size changed" in found["scipy 1.11.4: numpy>=1.21.6,<1.28.0"]["error"]
    assert found["scipy 1.9.3: numpy>=1.18.5,<1.26.0"]["verdict"] == "too strict"
    md = (results / "matrix.md").read_text()
    assert "## Declared bounds against the evidence" in md and "| too strict | py311 | scipy 1.9.3" in md
    # Override cells are no install evidence: the known-good pins never come from them.
    (tmp_path / "empty.yaml").write_text("[]\n")
    exported = cm("export", "constraints", "--results", str(results), "--output", str(tmp_path / "c"),
                  "--registry", str(tmp_path / "empty.yaml"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "override" not in exported.stdout
