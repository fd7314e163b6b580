"""Sessions: `nox -s matrix` runs the sweep, `nox -s tests` the test suite (`nox -l` lists all)."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["lint", "tests"]
# uv makes the session environments in seconds; plain virtualenv where uv is absent.
nox.options.default_venv_backend = "uv|virtualenv"


def install_project(session: nox.Session, extras: str = "") -> None:
    # setuptools reuses build/ from an earlier build and can install stale modules from it.
    shutil.rmtree("build", ignore_errors=True)
    session.install(f".{extras}")


@nox.session
def matrix(session: nox.Session) -> None:
    """Sweep matrix.yaml into results/ (args go to `compat-matrix run`, e.g. -- --select 'bookworm-*')."""
    install_project(session)
    session.run("compat-matrix", "run", *session.posargs)


@nox.session
def sweep(session: nox.Session) -> None:
    """Scheduled sweep: specifier axes from the index, only cells without a verdict, diff against the
    last table. Exit 0 nothing regressed, 1 a regression, 2 bad input, 3 infra errors left no verdict."""
    install_project(session)
    session.run("compat-matrix", "run", "--resume", "--fail-on-regression", *session.posargs)


@nox.session
def pins(session: nox.Session) -> None:
    """Before a bump: tested partners of a pin, newest first (e.g. -- numpy==2.0.2 --base py311)."""
    install_project(session)
    session.run("compat-matrix", "pins", *session.posargs)


@nox.session
def preflight(session: nox.Session) -> None:
    """Check a Dockerfile against the results and the registry (-- path/to/Dockerfile [--baseline OLD])."""
    install_project(session)
    session.run("compat-matrix", "preflight", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """All tests: unit (no engine) and integration (real Docker Engine, real package index)."""
    install_project(session, "[test]")
    session.run("pytest", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """Only the unit tests: seconds, no engine, no network."""
    install_project(session, "[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over everything; the package's layers (import-linter: only downward imports, no cycle,
    every module placed); its types (mypy). Their settings are in pyproject.toml."""
    session.install("ruff")
    session.run("ruff", "check", "matrix", "probes", "tests", "benchmarks", "noxfile.py", *session.posargs)
    install_project(session)
    session.install("import-linter", "mypy")
    session.run("lint-imports")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Issue #7's speed targets side by side: the naive way, the nox + uv peer and ours on one 12-cell
    matrix, then re-runs, bytes fetched and the micro-benchmarks; prints ratios (needs the engine).
    `-- --large` adds issue #18's growth benchmark (800 cells, venv backend, cold package cache)."""
    install_project(session)
    session.install("nox")
    session.run("python", "-m", "benchmarks.bench", *session.posargs)
    # Issue #16's scale: planning, sharding and merging 100 000 cells over 100 shards (time, peak memory).
    session.run("python", "-m", "benchmarks.fanout_scale")
