"""The pre-commit hook with the real `pre-commit` package: installed from this repository (a local
path, as `repo:`), then, offline, commits in a throwaway git repository: a Dockerfile that drops the
fix its last committed version carried is blocked, a fixed one passes; a requirements file pinning a
combination the results show failing is blocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "tests" / "resources" / "records" / "venv-sweep-20261128.jsonl"
# What the hook's environment is built from (`pip install .` of the snapshot).
SHIPPED = ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "matrix", "probes")

FIXED = """FROM python:3.11-slim-bookworm
RUN pip install --no-cache-dir scipy==1.11.4
RUN pip install --no-cache-dir numpy==2.2.6
RUN pip uninstall -y numpy scipy && pip install --no-cache-dir numpy==1.24.3 scipy==1.10.1
"""
REGRESSED = "\n".join(FIXED.splitlines()[:3]) + "\n"  # the fix's line dropped
BUMPED = """FROM python:3.11-slim-bookworm
RUN pip install --no-cache-dir numpy==2.2.6 scipy==1.14.1
"""


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def snapshot(dest: Path) -> str:
    """This working tree's shipped files as a one-commit repository (what `pre-commit try-repo` does):
    the hook under test is the code under test, committed or not."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z", "--", *SHIPPED],
                            capture_output=True, text=True, timeout=60, check=True).stdout.split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    assert git(dest, "init", "-q").returncode == 0
    assert git(dest, "add", "-A").returncode == 0
    assert git(dest, "commit", "-qm", "snapshot").returncode == 0
    return git(dest, "rev-parse", "HEAD").stdout.strip()


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("precommit")
    hooks_repo, repo = root / "compat-matrix", root / "user"
    hooks_repo.mkdir()
    repo.mkdir()
    rev = snapshot(hooks_repo)
    env = dict(os.environ, PRE_COMMIT_HOME=str(root / "pre-commit-home"))
    env.pop("PRE_COMMIT", None)
    assert git(repo, "init", "-q").returncode == 0
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hooks_repo}\n    rev: {rev}\n    hooks:\n"
        "      - id: compat-matrix-preflight\n        args: [--base, py311]\n")
    (repo / "results").mkdir()
    shutil.copy(RECORDS, repo / "results" / "records.jsonl")
    (repo / "registry").mkdir()
    shutil.copy(REPO / "registry" / "known-issues.yaml", repo / "registry" / "known-issues.yaml")

    def pre_commit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600)

    # Online once: pre-commit builds the hook's environment from the local repository.
    for step in (("install",), ("install-hooks",)):
        done = pre_commit(*step)
        assert done.returncode == 0, done.stdout + done.stderr
    # From here on no index answers: the installed hook needs none.
    dead = "http://127.0.0.1:9"
    offline = dict(env, HTTP_PROXY=dead, HTTPS_PROXY=dead, ALL_PROXY=dead, http_proxy=dead, https_proxy=dead,
                   all_proxy=dead, PIP_INDEX_URL=f"{dead}/simple", PIP_NO_INDEX="1", UV_OFFLINE="1")
    return repo, offline


def commit(repo: Path, env: dict[str, str], files: dict[str, str], message: str) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (repo / name).write_text(text)
    assert git(repo, "add", *files, env=env).returncode == 0
    return git(repo, "commit", "-m", message, env=env)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def test_the_hook_blocks_a_dropped_fix_and_passes_the_fixed_file(user_repo: tuple[Path, dict[str, str]]) -> None:
    repo, env = user_repo
    first = commit(repo, env, {"Dockerfile": FIXED, "requirements.txt": "numpy==1.24.3\nscipy==1.10.1\n",
                               ".pre-commit-config.yaml": (repo / ".pre-commit-config.yaml").read_text()},
                   "v1: the fix in place")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "compat-matrix preflight" in first.stdout + first.stderr
    v1 = head(repo)

    blocked = commit(repo, env, {"Dockerfile": REGRESSED}, "v2: the fix dropped")
    out = blocked.stdout + blocked.stderr
    assert blocked.returncode != 0, out
    assert head(repo) == v1
    assert "Dockerfile: baseline: the last committed version (git HEAD)" in out
    assert "fix for known issue numpy_scipy_incompatibility not carried forward from the baseline" in out
    assert "fails on py311: import-error in py311-numpy2.2.6-scipy1.11.4-layered" in out

    passed = commit(repo, env, {"Dockerfile": BUMPED}, "v2: numpy 2 with a scipy built for it")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert head(repo) != v1


def test_the_hook_blocks_a_requirements_file_pinning_a_known_bad_combination(
        user_repo: tuple[Path, dict[str, str]]) -> None:
    repo, env = user_repo
    before = head(repo)
    blocked = commit(repo, env, {"requirements.txt": "numpy==2.2.6\nscipy==1.11.4\n"}, "bump numpy alone")
    out = blocked.stdout + blocked.stderr
    assert blocked.returncode != 0, out
    assert head(repo) == before
    assert "requirements.txt:2: error: numpy 2.2.6 + scipy 1.11.4, installed together" in out
    assert "resolve-conflict" in out
    git(repo, "reset", "-q", "--hard", "HEAD", env=env)
