"""Hostile and broken input through the real command line (venv backend, no engine needed): each is
exit 2 with the thing named, in a process the test bounds, never a hang, a traceback or a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MATRIX = 'bases: {py311: {python: "3.11"}}\npackages: {numpy: ["1.26.4"]}\ninstall: {ca_bundle: none}\n'


def run(tmp_path: Path, *args: str, matrix: str = MATRIX) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "matrix.yaml"
    config.write_text(matrix)
    return subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(config), "--backend", "venv",
                           *args], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=os.environ.copy(),
                          check=False)


def test_results_pointing_at_a_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "results.txt"
    target.write_text("mine")
    done = run(tmp_path, "--results", str(target))
    assert done.returncode == 2, done.stderr
    assert f"{target}: --results: is a file, not a directory" in done.stderr and "Traceback" not in done.stderr
    assert target.read_text() == "mine"


def test_a_lock_that_is_a_directory_is_exit_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "out" / ".lock").mkdir(parents=True)
    done = run(tmp_path, "--results", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert f"{tmp_path / 'out' / '.lock'}: --results: is a directory" in done.stderr
    assert "Traceback" not in done.stderr and os.listdir(tmp_path / "out") == [".lock"]


def test_broken_matrix_files_are_exit_2_before_anything_runs(tmp_path: Path) -> None:
    bomb = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    bomb += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    cases = {
        "\n".join([*bomb, "bases: *l9"]) + "\n": "its aliases (*name) expand it to",
        "bases: " + "[" * 5000 + "]" * 5000 + "\n": "nested more than 64 levels deep",
        MATRIX + "limits: {timeout_s: .nan}\n": "limits.timeout_s",
        MATRIX + "limits: {timeout_s: " + "9" * 400 + "}\n": "limits.timeout_s",
        MATRIX.replace("install: {ca_bundle: none}", "install: {ca_bundle: none, index_url: "
                       "'https://alice:hunter2 $@pypi.corp/simple'}"): "install.index_url",
    }
    for text, says in cases.items():
        done = run(tmp_path, "--results", str(tmp_path / "results"), matrix=text)
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "hunter2" not in done.stderr + done.stdout
        assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
