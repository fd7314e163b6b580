"""The docker backend's decisions, with a fake engine standing in for faults a real one will not
produce on demand (a daemon that dies mid-build, an exec it loses track of). Real builds, a real
engine stopped under a probe and real concurrent runs are in tests/integration."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from matrix import paths, probing
from matrix.backends import dockerfile, prober
from matrix.backends.docker import KEEP_MARK, DockerBackend, prefix_failure, reap_script, venv_name
from matrix.backends.engine import (
    PROBE,
    ROLE_LABEL,
    RUN_LABEL,
    SANDBOX_USER,
    WORKBENCH,
    AgentGone,
    BuildResult,
    ContainerState,
    EngineFault,
    Sandbox,
    exec_fault,
    killed_from_outside,
    liveness,
    outran,
)
from matrix.cells import Cell
from matrix.probing import RunResult, judge
from matrix.resultcache import ResultCache
from matrix.store import Outcome
from matrix.sweep import sweep
from tests.unit.conftest import inode_flags, on_ext

MATRIX = """
bases: {b: {image: "python:3.11-slim"}}
packages: {numpy: ["1.26.4"]}
install: {ca_bundle: none, index_url: "https://alice:s3cret@pypi.corp.invalid/simple"}
"""
SETUP_MATRIX = """
bases: {b: {image: "python:3.11-slim", setup: ["apt-get install -y python3"]}}
packages: {numpy: ["1.26.4"]}
install: {ca_bundle: none}
"""
CELL = Cell("b", "together", (("numpy", "1.26.4"),))
LAYERED = Cell("b", "layered", (("numpy", "1.26.4"),))
OTHER = Cell("b", "together", (("numpy", "2.2.6"),))  # pins of its own: no probe run shared with CELL

INSTALLED = RunResult(0, "", "")
BUILT = BuildResult(True, "")
# What the engine's classic builder said for a setup step that failed (recorded from docker 20.10).
APT_FAILED = BuildResult(
    False,
    "Step 1/6 : FROM python:3.11-slim\n ---> be85e308bb66\nStep 2/6 : LABEL org.compat-matrix.run=\"cache\"\n"
    " ---> Using cache\n ---> 06627c806503\nStep 3/6 : RUN apt-get install -y python3\n ---> Running in af68923c93c8\n"
    "Reading package lists...\nE: Unable to locate package python3\nRemoving intermediate container af68923c93c8\n"
    "The command '/bin/sh -c apt-get install -y python3' returned a non-zero code: 100\n",
    "The command '/bin/sh -c apt-get install -y python3' returned a non-zero code: 100")
# The runtime's answer to an exec whose program is not there (recorded from docker 20.10, exit code 126).
OCI_FAILED = ('OCI runtime exec failed: exec failed: unable to start container process: exec: "/opt/compat-matrix/'
              'bin/uv": stat /opt/compat-matrix/bin/uv: no such file or directory: unknown\r\n')


class FakeEngine:
    description = "fake"

    def __init__(self, install: RunResult | Exception = INSTALLED, base_error: str | None = None,
                 build: BuildResult = BUILT, setup: RunResult | Exception = INSTALLED,
                 probe: RunResult | Exception | Callable[[str], RunResult] | None = None) -> None:
        self._install, self._base_error, self._build, self._setup = install, base_error, build, setup
        self._probe = probe if probe is not None else EngineFault("daemon went away")
        self.removed: list[tuple[str, str | None]] = []
        self.execs: list[tuple[list[str], dict[str, str]]] = []
        self.files: dict[str, tuple[bytes, int]] = {}
        self.built: list[str] = []
        self.started: list[dict[str, str]] = []
        self.commands: list[list[str]] = []  # the workbenches' commands
        self.states: dict[str, ContainerState] = {}
        self.runs: dict[str, bool] = {}
        # Probers: what their clean-up prints (a count of OOM kills, else a failure), the ones
        # started (labels and sandbox), the containers removed, and whether probes run one-shot.
        self.clean: RunResult = RunResult(0, "oom_kill 0\n", "")
        self.cleans: list[RunResult] = []  # said first, one each, before `clean`
        self.clean_execs = 0
        self.probers: list[tuple[dict[str, str], Sandbox]] = []
        self.gone: list[str] = []
        self.one_shot = 0
        self.probed_in: list[str] = []

    def ensure_image(self, ref: str) -> str | None:
        return self._base_error

    def image_id(self, ref: str) -> str | None:
        if ref.startswith("compat-matrix-base:") and (ref not in self.built or not self._build.ok):
            return None
        return "sha256:" + "0" * 64

    def build(self, context_dir: Path, tag: str) -> BuildResult:
        assert (context_dir / "Dockerfile").is_file()
        self.built.append(tag)
        return self._build

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        assert labels == {"org.compat-matrix.run": "cache"}

    def start(self, image: str, command: list[str], *, labels: dict[str, str], volumes: dict[str, str],
              sandbox: Sandbox | None = None, agent: bool = False) -> str:
        if sandbox is not None:
            assert command == prober.IDLE and volumes == {"compat-matrix-cache": "/opt/compat-matrix/cache"}
            assert not agent
            self.probers.append((labels, sandbox))
            return f"prober{len(self.probers)}"
        assert agent and command[-1].endswith("/_workbench.py")
        self.commands.append(command)
        self.started.append(labels)
        return f"bench{len(self.started)}"

    def remove(self, container: str) -> None:
        self.gone.append(container)

    def state(self, container: str) -> ContainerState:
        return self.states.get(container, ContainerState(True))

    def stopped(self, container: str, timeout_s: float) -> ContainerState:
        return self.state(container)

    def put_files(self, container: str, files: dict[str, Path | bytes], mode: int = 0o644) -> None:
        for path, content in files.items():
            self.files[path] = (content if isinstance(content, bytes) else content.read_bytes(), mode)

    def exec(self, container: str, command: list[str], environment: dict[str, str] | None = None, *,
             user: str | None = None, timeout_s: float | None = None, on_timeout: object = None,
             what: str = "") -> RunResult:
        if container.startswith("prober"):
            assert user == SANDBOX_USER
            if command == ["sh", "-c", prober.CLEAN]:
                self.clean_execs += 1
                return self.cleans.pop(0) if self.cleans else self.clean
            assert command[1].endswith("/_driver.py") and timeout_s is not None
            assert (environment or {}).get("COMPAT_MATRIX_PROBER") == "1"  # told to clean up after itself
            self.probe_labels = self.probers[int(container[len("prober"):]) - 1][0]
            self.probed_in.append(container)
            probe = self._probe
            if callable(probe):
                probe = probe((environment or {})["COMPAT_MATRIX_NONCE"])
            if isinstance(probe, Exception):
                raise probe
            return probe
        self.execs.append((command, environment or {}))
        if (command[0].endswith("/uv") and command[1] == "pip") or (
                command[:2] == ["sh", "-c"] and "/uv pip install " in command[2]):  # an installer step
            if isinstance(self._install, Exception):
                raise self._install
            mark = re.search(r"(compat-matrix-fingerprint-[0-9a-f]+);", command[-1])
            if self._install.exit_code == 0 and mark:  # the install's last exec goes on to print the fingerprint
                return replace(self._install, stdout=f"{self._install.stdout}\n{mark[1]} fingerprint\n")
            return self._install
        if command[:2] == ["sh", "-c"] and "mkdir -p" in command[2]:  # a workbench's set-up
            if isinstance(self._setup, Exception):
                raise self._setup
            return self._setup
        return RunResult(0, "", "")

    def installer_steps(self) -> list[tuple[list[str], dict[str, str]]]:
        """The execs that ran an installer step (`uv pip install`, alone or after the venv's making)."""
        return [(c, e) for c, e in self.execs if c[1:2] == ["pip"] or "/uv pip install " in c[-1]]

    def run(self, image, command, **kw) -> RunResult:
        self.one_shot += 1
        self.probe_labels = kw["labels"]
        if isinstance(self._probe, Exception):
            raise self._probe
        return self._probe

    def remove_labelled(self, run_id: str, cell: str | None = None, *, settle_s: float = 0.0) -> int:
        self.removed.append((run_id, cell))
        return 0

    def live_runs(self) -> dict[str, bool]:
        return dict(self.runs)

    def alive(self) -> bool:
        return self.is_alive

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    is_alive = True

    def setups(self) -> list[str]:
        return [c[2] for c, _ in self.execs if c[:2] == ["sh", "-c"] and "mkdir -p" in c[2]]


def test_engine_fault_is_infra_error_and_the_runs_venvs_still_go(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(EngineFault("running uv in bench: connection refused"))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    rec = backend.run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "connection refused" in rec.error
    backend.close(interrupted=False)
    script = engine.execs[-1][0][-1]
    assert engine.execs[-1][0][:2] == ["sh", "-c"] and script.endswith("rm -rf /opt/compat-matrix/cache/venvs/run1")
    assert engine.removed == [("run1", None)]


def test_an_idle_workers_tidy_does_not_hold_up_the_run_and_the_probers_go_meanwhile(make_spec,
                                                                                   tmp_path: Path) -> None:
    """idle() is the tidy's start, not its end: the worker is through at once. close() removes
    the probers while that tidy still runs, and removes the rest of the run's venvs after it."""
    engine = FakeEngine(probe=RunResult(0, "", ""))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    backend.run_cell(CELL, tmp_path)
    backend.run_cell(OTHER, tmp_path)
    release, tidying = threading.Event(), threading.Event()
    plain = engine.exec

    def exec_(container: str, command: list[str], *args: object, **kwargs: object) -> RunResult:
        if "rm -rf" in command[-1] and "printf" in command[-1]:  # the tidy: these cells' venvs by name
            tidying.set()
            assert release.wait(timeout=30)
        return plain(container, command, *args, **kwargs)  # type: ignore[arg-type]

    engine.exec = exec_  # type: ignore[method-assign]
    started = time.monotonic()
    backend.idle()
    assert tidying.wait(timeout=30) and time.monotonic() - started < 5
    closing = threading.Thread(target=backend.close, kwargs={"interrupted": False})
    closing.start()
    deadline = time.monotonic() + 30
    while "prober1" not in engine.gone and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.gone == ["prober1"] and closing.is_alive() and engine.removed == []
    release.set()
    closing.join(timeout=30)
    assert not closing.is_alive()
    tidy, last = [c[-1] for c, _ in engine.execs if "xargs" in c[-1]]  # the tidy, then close()'s
    assert all(venv_name("run1", c) in tidy for c in (CELL, OTHER))
    assert last.endswith("rm -rf /opt/compat-matrix/cache/venvs/run1") and engine.removed == [("run1", None)]


def test_a_tidy_that_failed_is_said_by_close_after_the_clean_up(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(probe=RunResult(0, "", ""))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    backend.run_cell(CELL, tmp_path)
    plain = engine.exec

    def exec_(container: str, command: list[str], *args: object, **kwargs: object) -> RunResult:
        if "printf" in command[-1]:  # the tidy's removal: a fault that is no engine's
            raise RuntimeError("a bug of ours")
        return plain(container, command, *args, **kwargs)  # type: ignore[arg-type]

    engine.exec = exec_  # type: ignore[method-assign]
    backend.idle()
    with pytest.raises(EngineFault, match="tidying finished cells failed: a bug of ours"):
        backend.close(interrupted=False)
    assert engine.removed == [("run1", None)] and engine.gone == ["prober1"]


def test_the_tidy_and_the_end_of_run_removal_run_in_a_real_shell(make_spec, tmp_path: Path) -> None:
    """The two removal scripts, as the workbench's sh runs them: the tidy removes the venvs it
    names and nothing else; close()'s removes the run's whole directory."""
    engine = FakeEngine(probe=RunResult(0, "", ""))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    backend.run_cell(CELL, tmp_path)
    backend.run_cell(OTHER, tmp_path)
    backend.idle()
    backend.close(interrupted=False)
    tidy, last = [c[-1] for c, _ in engine.execs if "xargs" in c[-1]]
    run = tmp_path / "venvs" / "run1"
    names = [venv_name("run1", CELL), venv_name("run1", OTHER), "not-through-yet"]
    for name in names:
        (run / name / "lib" / "site-packages" / "pkg").mkdir(parents=True)
        (run / name / "lib" / "site-packages" / "pkg" / "mod.py").write_text("x = 1\n")
    here = lambda script: script.replace("/opt/compat-matrix/cache/venvs/run1", shlex.quote(str(run)))  # noqa: E731
    for script in (tidy, last):  # quietly: xargs took its count of processes (else the fallback is all that ran)
        done = subprocess.run(["sh", "-c", here(script)], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stderr) == (0, "")
        if script is tidy:
            assert [p.name for p in run.iterdir()] == ["not-through-yet"]
    assert not run.exists() and (tmp_path / "venvs").is_dir()


def test_the_backend_settles_once_its_first_workbench_is_up(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(probe=RunResult(0, "", ""))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    started = time.monotonic()
    backend.settled(0.2)  # no workbench yet: it waits its time out
    assert time.monotonic() - started >= 0.2
    backend.run_cell(CELL, tmp_path)
    started = time.monotonic()
    backend.settled(30)
    assert time.monotonic() - started < 5
    # A base that fails before any workbench settles it too: nothing would ever set it otherwise.
    failing = DockerBackend(FakeEngine(base_error="no such image"), make_spec(MATRIX), "run2")
    failing.run_cell(CELL, tmp_path)
    started = time.monotonic()
    failing.settled(30)
    assert time.monotonic() - started < 5


def test_failed_install_is_classified_and_credentials_stay_in_a_private_file(make_spec, tmp_path: Path) -> None:
    out = ("  × No solution found when resolving dependencies:\n  ╰─▶ Because there is no version of "
           "numpy==1.26.4 and you require numpy==1.26.4, we can conclude that your requirements are unsatisfiable.\n"
           "  error: https://alice:s3cret@pypi.corp.invalid/simple/numpy/ said 404\n")
    engine = FakeEngine(RunResult(1, "", out))
    logs = tmp_path / "logs"
    logs.mkdir()
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, logs)
    assert rec.outcome is Outcome.NO_WHEEL
    for f in logs.iterdir():
        assert "s3cret" not in f.read_text(), f.name
    for command, env in engine.execs:
        assert "s3cret" not in " ".join(command) + str(env)
    installs = engine.installer_steps()
    assert installs and all(e == {"UV_CONFIG_FILE": "/opt/compat-matrix/uv.toml"} for _, e in installs)
    conf, mode = engine.files["/opt/compat-matrix/uv.toml"]
    assert b'index-url = "https://alice:s3cret@pypi.corp.invalid/simple"' in conf and mode == 0o600


def test_an_installer_killed_with_no_output_is_infra_and_never_cached(make_spec, tmp_path: Path) -> None:
    # SIGKILL (the OOM killer) of uv inside the workbench: docker exec reports 137, and nothing was said.
    s = make_spec(MATRIX)
    engine = FakeEngine(RunResult(137, "", ""))
    backend = DockerBackend(engine, s, "run1")
    cache = ResultCache(s, "docker", (), directory=tmp_path / "cache")
    result = sweep((CELL,), backend, tmp_path / "r", "run1", echo=lambda _: None, sleep=lambda _: None,
                   retry_waits=(), cache=cache)
    [rec] = result.records
    assert rec.outcome is Outcome.INFRA_ERROR and "137" in rec.error and "SIGKILL" in rec.error
    assert cache.get(cache.key(CELL, backend.base_id(s.base("b")))) is None


def test_an_install_step_that_dies_with_its_workbench_is_infra(make_spec, tmp_path: Path) -> None:
    # The step's output is whatever it had printed when the container went: not the installer's verdict.
    engine = FakeEngine(RunResult(1, "Resolved 1 package in 12ms\n", ""))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    engine.states["bench1"] = ContainerState(False, 137, logs="")
    rec = backend.run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "workbench stopped during an install step" in rec.error
    assert "killed by SIGKILL" in rec.error


def test_an_unrecognised_failure_with_only_binary_is_infra(make_spec, tmp_path: Path) -> None:
    # only_binary (the default): nothing is built, so an installer failure no rule names is not the pins'.
    engine = FakeEngine(RunResult(2, "", "error: something nobody has a rule for\n"))
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "something nobody has a rule for" in rec.error


def test_a_probe_wait_the_engine_dropped_is_infra_not_timeout(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(probe=EngineFault("waiting for the probe container: the engine dropped the connection"))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    rec = backend.run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "dropped the connection" in rec.error
    assert engine.probe_labels[ROLE_LABEL] == PROBE and engine.started[0][ROLE_LABEL] == WORKBENCH


def said(exit_code: int = 0, *, complete: bool = True, oom_kills: int | None = 0,
         cleaned: bool | None = None, oom_total: int = 0) -> Callable[[str], RunResult]:
    """What a driver prints (its records start with the run's nonce) and how its exec ends;
    `cleaned`: what it says of its own clean-up of the prober (None: nothing)."""
    def run(nonce: str) -> RunResult:
        records = [{"kind": "env", "python": "3.11.7", "installed": {"numpy": "1.26.4"}},
                   {"kind": "probe", "probe": "imports", "returncode": 0, "result": {"status": "pass", "checks": []}}]
        if complete:
            records.append({"kind": "done", **({"oom_kills": oom_kills} if oom_kills is not None else {}),
                            **({"cleaned": cleaned, "oom_total": oom_total} if cleaned is not None else {})})
        return RunResult(exit_code, "".join(f"{nonce} {json.dumps(r)}\n" for r in records), "")
    return run


def logs(tmp_path: Path, name: str) -> Path:
    """A cell's own log directory (cells that share one would share their probe run's files)."""
    (tmp_path / name).mkdir(exist_ok=True)
    return tmp_path / name


def wait_for_cleaning(backend: DockerBackend) -> None:
    """The clean-up after a driver that ended in order runs in the background: the next take waits for it."""
    probers = backend._bases["b"].probers
    assert probers is not None
    probers._free.append(probers._take())


def test_probes_run_in_one_prober_and_the_drivers_count_of_oom_kills_is_each_cells_own(
        make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(probe=said(oom_kills=1))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    oom = backend.run_cell(CELL, logs(tmp_path, "cell"))
    assert oom.outcome is Outcome.CRASH and "out of memory" in oom.error
    wait_for_cleaning(backend)
    engine._probe = said(oom_kills=0)
    fine = backend.run_cell(OTHER, logs(tmp_path, "other"))
    assert fine.outcome is Outcome.PASS, fine.error
    assert engine.probed_in == ["prober1", "prober1"] and engine.gone == [] and engine.one_shot == 0
    [(labels, sandbox)] = engine.probers
    assert labels[ROLE_LABEL] == PROBE and labels[RUN_LABEL] == "run1" and sandbox.memory == "4g"
    assert (tmp_path / "other" / "prober").read_text().startswith("probed in container prober1")


def test_a_driver_that_cleaned_up_its_prober_frees_it_with_no_clean_up_exec(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(probe=said(cleaned=True, oom_total=2))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    assert backend.run_cell(CELL, logs(tmp_path, "cell")).outcome is Outcome.PASS
    probers = backend._bases["b"].probers
    assert probers is not None and [p.oom_kills for p in probers._free] == [2]  # free at once, at its count
    assert engine.clean_execs == 1  # the one when the prober started
    # A driver that could not clean up, or whose count is below the prober's (not to be believed):
    # the clean-up runs after all, and its count is the prober's.
    for cell, cleaned, total in ((OTHER, True, 1), (Cell("b", "together", (("numpy", "2.0.2"),)), False, 0)):
        engine._probe = said(cleaned=cleaned, oom_total=total)
        assert backend.run_cell(cell, logs(tmp_path, f"other-{cleaned}")).outcome is Outcome.PASS
        wait_for_cleaning(backend)
    assert engine.clean_execs == 3 and [p.oom_kills for p in probers._free] == [0]
    assert engine.probed_in == ["prober1"] * 3 and engine.gone == []


def test_a_driver_that_did_not_end_in_order_is_judged_on_the_clean_ups_count(make_spec, tmp_path: Path) -> None:
    # SIGKILL and the container's count went up: its memory limit, the cell's crash; the prober goes on.
    engine = FakeEngine(probe=said(137, complete=False))
    engine.cleans = [RunResult(0, f"oom_kill {n}\n", "") for n in (0, 1)]
    engine.clean = RunResult(0, "oom_kill 1\n", "")
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    oom = backend.run_cell(CELL, logs(tmp_path, "cell"))
    assert oom.outcome is Outcome.CRASH and "out of memory" in oom.error
    # SIGKILL with the count unchanged: killed from outside the cell, no verdict; that prober goes.
    outside = backend.run_cell(OTHER, logs(tmp_path, "other"))
    assert outside.outcome is Outcome.INFRA_ERROR and "killed from outside" in outside.error
    assert engine.probed_in == ["prober1", "prober1"] and engine.gone == ["prober1"]


def test_a_prober_that_cannot_be_cleaned_is_removed_and_the_next_cell_gets_a_new_one(
        make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(probe=said(1, complete=False))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    first = backend.run_cell(CELL, logs(tmp_path, "cell"))
    assert first.outcome is Outcome.CRASH and "did not end in order" not in first.error  # the driver died
    engine.clean = RunResult(70, "", "processes of the last cell would not die\n")
    stuck = backend.run_cell(OTHER, logs(tmp_path, "other"))
    assert stuck.outcome is Outcome.INFRA_ERROR and "would not die" in stuck.error
    assert engine.gone == ["prober1"]
    engine.clean, engine._probe = RunResult(0, "oom_kill 0\n", ""), said()
    third = Cell("b", "together", (("numpy", "2.0.2"),))
    assert backend.run_cell(third, logs(tmp_path, "third")).outcome is Outcome.PASS
    assert engine.probed_in[-1] == "prober2"


def test_an_engine_without_a_count_of_oom_kills_probes_each_cell_in_a_container_of_its_own(
        make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(probe=RunResult(0, "", ""))
    engine.clean = RunResult(72, "", "the container cannot read its count of OOM kills\n")
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    backend.run_cell(CELL, logs(tmp_path, "cell"))
    backend.run_cell(OTHER, logs(tmp_path, "other"))
    assert engine.one_shot == 2 and engine.probed_in == [] and engine.gone == ["prober1"]
    assert engine.probe_labels[ROLE_LABEL] == PROBE and len(engine.probers) == 1


def test_a_setup_exec_that_hit_an_engine_fault_is_that_cells_infra_error_only(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(setup=EngineFault("running sh in bench1: connection aborted"))
    engine.states["bench1"] = ContainerState(False, 137)
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    rec = backend.run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "workbench stopped while being set up" in rec.error
    assert "killed by SIGKILL" in rec.error
    # The base is not condemned: the next cell starts a workbench of its own and gets on with it.
    engine._setup = INSTALLED
    engine._probe = RunResult(0, "", "")
    rec = backend.run_cell(LAYERED, tmp_path)
    assert rec.outcome is not Outcome.BUILD_ERROR and len(engine.started) == 2
    # A fault while the workbench runs on is the engine's as well.
    engine = FakeEngine(setup=EngineFault("running sh in bench1: read timed out"))
    rec = DockerBackend(engine, make_spec(MATRIX), "run2").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "read timed out" in rec.error


def test_the_workers_share_one_workbench_and_each_gets_a_prober_started_ahead(make_spec, tmp_path: Path) -> None:
    """A cell that comes while another is in the base's workbench uses it too (its agent runs the
    commands of both), and has a prober of its own started for it meanwhile."""
    engine = FakeEngine(probe=said())
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    plain = engine.exec
    held = threading.Event()

    def exec_(container: str, command: list[str], *args: object, **kwargs: object) -> RunResult:
        if container.startswith("bench") and "/uv pip install " in command[-1] and not held.is_set():
            held.set()  # the first cell's install goes on once the second cell is in too
            deadline = time.monotonic() + 10
            while len(engine.probers) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        return plain(container, command, *args, **kwargs)  # type: ignore[arg-type]

    engine.exec = exec_  # type: ignore[method-assign]
    records: dict[str, object] = {}
    workers = [threading.Thread(target=lambda c=c, n=n: records.update({n: backend.run_cell(c, logs(tmp_path, n))}))
               for n, c in (("cell", CELL), ("other", OTHER))]
    workers[0].start()
    assert held.wait(10)
    workers[1].start()
    for w in workers:
        w.join(timeout=30)
    assert all(r.outcome is Outcome.PASS for r in records.values()), records  # type: ignore[attr-defined]
    assert len(engine.started) == 1 and len(engine.setups()) == 1 and len(engine.probers) == 2
    backend.close(interrupted=False)


def test_a_workbench_whose_agent_is_gone_is_replaced_for_the_next_cell(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(AgentGone("running sh in bench1: the workbench's agent announced 1 + 99999999999 bytes"))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    rec = backend.run_cell(CELL, logs(tmp_path, "cell"))
    assert rec.outcome is Outcome.INFRA_ERROR and "announced" in rec.error
    assert engine.gone == ["bench1"]  # it runs nothing more
    engine._install = INSTALLED
    engine._probe = said()
    assert backend.run_cell(OTHER, logs(tmp_path, "other")).outcome is Outcome.PASS
    assert len(engine.started) == 2 and engine.execs[-1][0][2].startswith("/opt/compat-matrix/bin/uv venv")
    backend.close(interrupted=False)
    assert "rm -rf /opt/compat-matrix/cache/venvs/run1" in engine.execs[-1][0][-1]  # in the new one


def test_an_agent_lost_while_its_workbench_is_set_up_removes_no_other(make_spec, tmp_path: Path) -> None:
    """The set-up's agent is lost with the container still running: the cell is infra, and no
    workbench was up to be taken for the lost one (the run's label sweep removes the new one)."""
    engine = FakeEngine(setup=AgentGone("running sh in bench1: the workbench's agent announced 1 + 99999999999 bytes"))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    rec = backend.run_cell(CELL, logs(tmp_path, "cell"))
    assert rec.outcome is Outcome.INFRA_ERROR and "announced" in rec.error
    assert engine.gone == []


def test_a_python_killed_during_set_up_is_infra_a_python_that_fails_is_the_bases(make_spec, tmp_path: Path) -> None:
    # The workbench's command passes a signal's status (128 + N) through; a Python that ran and
    # failed ends it with 3 before its agent could answer the set-up.
    lost = EngineFault("running sh in bench1: the workbench's agent ended")
    engine = FakeEngine(setup=lost)
    engine.states["bench1"] = ContainerState(False, 137)
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "exit code 137" in rec.error
    engine = FakeEngine(setup=lost)
    engine.states["bench1"] = ContainerState(False, 3, logs="sh: 1: python3: not found\n")
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    recs = [backend.run_cell(c, tmp_path) for c in (CELL, LAYERED)]
    assert [r.outcome for r in recs] == [Outcome.BUILD_ERROR] * 2 and "python3: not found" in recs[0].error
    assert len(engine.started) == 1  # the base's verdict, kept for its other cells
    engine = FakeEngine(setup=lost)  # a fault while the workbench runs on is the engine's, not the base's
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "agent ended" in rec.error
    # The command really behaves so, in a real shell: a signal's status through, a failure as 3,
    # else the agent (here a stand-in that exits 0).
    command, agent = engine.commands[0], "exec python3 -I /opt/compat-matrix/probes/_workbench.py"
    assert command[:2] == ["sh", "-c"] and command[2].endswith(agent)
    script = command[2].replace(agent, "exit 0")
    for python, code in (("sh -c 'kill -9 $$'", 137), ("false", 3), ("true", 0)):
        ran = subprocess.run(["sh", "-c", script.replace("python3 -c ''", python)], capture_output=True, timeout=30)
        assert ran.returncode == code, python


def test_a_base_without_a_shell_is_the_bases_build_error(make_spec, tmp_path: Path) -> None:
    class NoShell(FakeEngine):
        def start(self, image: str, command: list[str], **kw: dict[str, str]) -> str:  # type: ignore[override]
            raise EngineFault('starting a container from x: OCI runtime create failed: exec: "sh": executable '
                              'file not found in $PATH: unknown')

    engine = NoShell()
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.BUILD_ERROR and "no shell" in rec.error


def test_missing_base_image_is_infra_error_for_every_cell_of_it(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(base_error="base image python:3.11-slim is not on the engine")
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "not on the engine" in rec.error


def test_the_prefix_image_is_built_once_and_a_failed_setup_is_every_cells_build_error(
        make_spec, tmp_path: Path) -> None:
    engine = FakeEngine()
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    backend.run_cell(CELL, tmp_path)
    backend.run_cell(LAYERED, tmp_path)
    assert len(engine.built) == 1
    failing = FakeEngine(build=APT_FAILED)
    backend = DockerBackend(failing, make_spec(SETUP_MATRIX), "run2")
    recs = [backend.run_cell(c, tmp_path) for c in (CELL, LAYERED)]
    assert [r.outcome for r in recs] == [Outcome.BUILD_ERROR] * 2 and "setup failed" in recs[0].error
    assert "Unable to locate package python3" in recs[0].error
    assert len(failing.built) == 1


def test_a_prefix_build_that_failed_in_the_engine_is_infra_and_tried_again(make_spec, tmp_path: Path) -> None:
    failing = FakeEngine(build=BuildResult(False, "Step 4/6 : COPY uv /opt/compat-matrix/bin/uv\n",
                                           "failed to copy files: write /var/lib/docker/tmp/x: input/output error"))
    backend = DockerBackend(failing, make_spec(SETUP_MATRIX), "run1")
    recs = [backend.run_cell(c, tmp_path) for c in (CELL, LAYERED)]
    assert [r.outcome for r in recs] == [Outcome.INFRA_ERROR] * 2 and "input/output error" in recs[0].error
    assert len(failing.built) == 2


def test_prefix_failure_reads_the_setup_steps_own_output(make_spec) -> None:
    base = make_spec(SETUP_MATRIX).base("b")
    v = prefix_failure(APT_FAILED, base)
    assert v.outcome is Outcome.BUILD_ERROR and "Unable to locate package python3" in v.error
    # The same step killed (the OOM killer) with nothing said: infra.
    killed = BuildResult(False, "Step 3/6 : RUN apt-get install -y python3\n ---> Running in af68923c93c8\n",
                         "The command '/bin/sh -c apt-get install -y python3' returned a non-zero code: 137")
    assert prefix_failure(killed, base).outcome is Outcome.INFRA_ERROR
    # A step that is not one of the base's (our own COPY, say) failing: infra.
    ours = BuildResult(False, "", "The command '/bin/sh -c chmod +x /opt/compat-matrix/bin/uv' returned a non-zero "
                                  "code: 1")
    assert prefix_failure(ours, base).outcome is Outcome.INFRA_ERROR


def test_judge_run() -> None:
    ok = probing.DriverReport(python="3.11.2", probes=[{"probe": "imports", "returncode": 0,
                                                        "result": {"status": "pass"}}], complete=True)
    assert judge(RunResult(0, "", ""), ok, "4g").outcome is Outcome.PASS
    assert judge(RunResult(137, "", "", oom_killed=True), ok, "4g").outcome is Outcome.CRASH
    partial = probing.DriverReport(python="3.11.2", probes=ok.probes, complete=False)
    assert judge(RunResult(None, "", "", timed_out=True), partial, "4g").outcome is Outcome.TIMEOUT
    assert judge(RunResult(137, "", ""), partial, "4g").outcome is Outcome.CRASH
    nothing = probing.DriverReport()
    v = judge(RunResult(127, "", "exec: python: not found\n"), nothing, "4g")
    assert v.outcome is Outcome.BUILD_ERROR and "not found" in v.error


def test_only_the_clock_makes_a_probe_timeout() -> None:
    assert outran(100.0, 400.0, 300.0)
    assert not outran(100.0, 112.0, 300.0)  # the engine stopping 12 s in: its fault, not a timeout
    assert not outran(100.0, 100.0, 300.0)
    # The engine's kill of a container (stopping, `docker kill`) is no verdict; its memory limit is.
    assert killed_from_outside(137, False) and killed_from_outside(143, False)
    assert not killed_from_outside(137, True)
    assert not killed_from_outside(139, False) and not killed_from_outside(1, False)


def test_exec_results_that_are_the_engines_not_the_commands() -> None:
    assert exec_fault(126, OCI_FAILED) is not None and "OCI runtime exec failed" in exec_fault(126, OCI_FAILED)
    assert exec_fault(None, "") is not None
    assert exec_fault(1, "error: No solution found when resolving dependencies") is None
    assert exec_fault(127, "sh: 1: python3.99: not found\n") is None  # the command's own word


def test_liveness_is_read_from_the_engines_objects() -> None:
    now = 1_000_000.0

    def c(run: str, state: str, role: str | None, created: float = now - 5000) -> dict[str, object]:
        labels = {RUN_LABEL: run, **({ROLE_LABEL: role} if role else {})}
        return {"Labels": labels, "State": state, "Created": created}

    got = liveness([c("live", "running", WORKBENCH), c("live", "exited", PROBE),
                    c("dead", "exited", WORKBENCH), c("dead", "running", PROBE),  # a probe outliving its run
                    c("starting", "created", WORKBENCH, created=now - 1),
                    c("never-started", "created", WORKBENCH),
                    c("older-version", "running", None), c("cache", "running", None)],
                   [{"Labels": {RUN_LABEL: "image-only"}}, {"Labels": {RUN_LABEL: "cache"}}], now)
    assert got == {"live": True, "dead": False, "starting": True, "never-started": False,
                   "older-version": True, "image-only": False}


def test_start_reaps_only_runs_the_engine_shows_dead(make_spec) -> None:
    engine = FakeEngine()
    engine.runs = {"dead": False, "alive-elsewhere": True, "run1": False}
    notes = DockerBackend(engine, make_spec(MATRIX), "run1").start()
    assert engine.removed == [("dead", None)]
    assert notes == ["removed 0 object(s) left on the engine by dead run dead"]


def _age(path: Path, minutes: float) -> None:
    t = time.time() - minutes * 60
    os.utime(path, (t, t))


def test_reap_script_spares_live_kept_and_new_run_directories(tmp_path: Path) -> None:
    venvs = tmp_path / "venvs"
    odd = "we'ird $(touch pwned) run"
    names = ["live", "dead-old", "dead-new", "kept-old", odd, "live-too"]
    for name in names:
        (venvs / name / "abc123").mkdir(parents=True)
    (venvs / "kept-old" / KEEP_MARK).touch()
    for name in names:
        if name != "dead-new":
            _age(venvs / name, 30)
    (venvs / "stray-file").touch()
    script = reap_script(str(venvs), {"live", odd, "live-too"})
    subprocess.run(["sh", "-c", script], check=True, timeout=30, cwd=tmp_path)
    assert sorted(p.name for p in venvs.iterdir()) == sorted(["live", "dead-new", "kept-old", odd, "live-too",
                                                               "stray-file"])
    assert not (tmp_path / "pwned").exists()
    # No live run at all (the volume's first use) is a valid script too.
    subprocess.run(["sh", "-c", reap_script(str(venvs), set())], check=True, timeout=30)
    assert not (venvs / "live").exists() and (venvs / "dead-new").exists()


def test_the_runs_venvs_are_spread_over_the_file_system(make_spec, tmp_path: Path) -> None:
    """The base's first workbench marks the run's directory as the top of a hierarchy (TOPDIR):
    on ext4 its venvs are then spread over the block groups, not packed into the directory's."""
    engine = FakeEngine(probe=RunResult(0, "", ""))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    backend.run_cell(CELL, tmp_path)
    backend.run_cell(OTHER, tmp_path)  # the same workbench: it says it once
    [setup] = engine.setups()
    python = "python3"
    spread = f"{python} -I -c {shlex.quote(dockerfile.SPREAD)} /opt/compat-matrix/cache/venvs/run1 2>/dev/null || :"
    assert spread in setup.splitlines()  # a line of its own: the set-up goes on past it
    # The line itself, run in a real shell on a directory of this machine's file system: the flag is
    # set where the file system has it (ext2/3/4: `stat -f` names them all "ext2/ext3"), and where it
    # has not, the line fails quietly and the set-up goes on.
    run = tmp_path / "venvs" / "run1"
    run.mkdir(parents=True)
    done = subprocess.run(["sh", "-c", spread.replace("/opt/compat-matrix/cache/venvs/run1", shlex.quote(str(run)))
                           .replace(python, shlex.quote(sys.executable), 1) + " && echo went-on"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout == "went-on\n" and done.stderr == ""
    if on_ext(run):
        assert inode_flags(run) & paths.FS_TOPDIR_FL
        assert not inode_flags(run.parent) & paths.FS_TOPDIR_FL


def test_a_cells_venv_is_named_anew_in_every_run(make_spec, tmp_path: Path) -> None:
    """ext4 places a directory made in a spread one (above) starting from a hash of its name: a
    name that came back every run put each cell's venv where the last run's had just been removed,
    among inodes freed too recently to be given out again (dockerfile.SPREAD)."""
    venvs = []
    for run in ("run1", "run2"):
        backend = DockerBackend(FakeEngine(probe=RunResult(0, "", "")), make_spec(MATRIX), run, keep=True)
        backend.run_cell(CELL, tmp_path)
        [line] = backend.kept()
        venvs.append(PurePosixPath(line.split()[1]))
    assert [v.parent.name for v in venvs] == ["run1", "run2"]
    assert venvs[0].name != venvs[1].name and venvs[0].name == venv_name("run1", CELL)


def test_keep_marks_the_runs_venvs_and_lists_them(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(probe=RunResult(0, "", ""))
    engine.runs = {"other-live": True, "other-dead": False}
    backend = DockerBackend(engine, make_spec(MATRIX), "run1", keep=True)
    backend.run_cell(CELL, tmp_path)
    [setup] = engine.setups()
    assert f"touch /opt/compat-matrix/cache/venvs/run1/{KEEP_MARK}" in setup
    assert "other-live|run1)" in setup and "other-dead" not in setup
    [line] = backend.kept()
    assert line.startswith(f"{CELL.id}: /opt/compat-matrix/cache/venvs/run1/") and "docker run --rm -it" in line
    backend.close(interrupted=False)
    assert engine.removed == [] and not any("rm -rf" in c[-1] and "run1" in c[-1] for c, _ in engine.execs[1:])


def test_a_dead_engine_is_named_so_the_sweep_stops(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(EngineFault("running uv in bench: connection refused"))
    engine.is_alive = False
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    cells = (CELL, LAYERED)
    result = sweep(cells, backend, tmp_path, "run1", echo=lambda _: None, sleep=lambda _: None)
    assert len(result.records) == 1
    assert result.records[0].error.startswith("the Docker Engine stopped answering")
    assert result.stopped and "stopped answering" in result.stopped


@pytest.mark.parametrize("code", [None, 0])
def test_state_describes_how_a_container_ended(code: int | None) -> None:
    assert ContainerState(True).describe() == "running"
    st = ContainerState(False, 137, logs="one\ntwo\n")
    assert st.describe() == "exit code 137, killed by SIGKILL; last output: two"
    assert "out of memory" in ContainerState(False, code, oom_killed=True).describe()


@pytest.mark.parametrize(("answer", "got"), [
    (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"Version\": \"1\"}\n",
     (200, {"Version": "1"})),
    (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such image", (404, b"no such image")),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK and more", (200, b"OK")),
    (b"HTTP/1.0 500 Server Error\r\n\r\nbroken", "answered 500"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.0 2000 OK\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nshort", "cut short"),
    (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n\r\n", "chunked"),
    (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{not json", "GET /version"),
    (b"HTTP/1.0 200 OK\r\nno header here\r\n\r\n", "not an HTTP header"),
    (b"", "not an HTTP answer"),
])
def test_the_engines_socket_is_read_as_http_and_anything_else_is_a_fault(tmp_path: Path, answer: bytes,
                                                                        got: object) -> None:
    """The unchanged re-run's GETs to the engine's socket (engine._Socket, HTTP/1.0 by hand): its
    answers read, and an answer that is not one an EngineFault."""
    from matrix.backends.engine import _Socket

    path = str(tmp_path / "engine.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    asked: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            asked.append(request)
            conn.sendall(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        if isinstance(got, str):
            with pytest.raises(EngineFault, match=got):
                _Socket(path).get("/version", all="1")
        else:
            assert _Socket(path).get("/version", all="1") == got
    finally:
        thread.join(10)
        server.close()
    assert asked == [b"GET /version?all=1 HTTP/1.0\r\nHost: localhost\r\n\r\n"]
