"""The embedded backend: one throwaway virtual environment per cell, no daemon needed.

Same install steps (install.py), same probes, same classification as the docker backend; uv
makes the venv and installs into it, with uv's one shared cache. The probes run as a local
process: there is no network or memory isolation here, which the docker backend adds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from uv import find_uv_bin

from matrix import gpus, install, locks, paths, probing
from matrix.backends import interpreters
from matrix.cells import Cell
from matrix.classify import Verdict, classify_install
from matrix.errors import Cancelled, redact
from matrix.spec import Base, Spec
from matrix.store import Outcome, Record

# An installer step that runs this long is stuck on the network, not telling us about the pins.
_INSTALL_TIMEOUT_S = 1800
# Host settings that describe this machine's CPU, not the cell (old OpenBLAS builds need them).
_PASSTHROUGH = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_PREFIX = "compat-matrix-"
_WORK_DIR = re.compile(r"^compat-matrix-(\d{8}T\d{6}Z-[0-9a-f]{6})-[^/]+$")
# In a work directory kept with --keep: no run ever removes it.
KEPT_MARK = ".compat-matrix-kept"


def _mark_kept(directory: Path) -> None:
    (directory / KEPT_MARK).write_text("kept with --keep; remove the directory when done with it\n",
                                       encoding="utf-8")


def live_lock(run_id: str) -> Path:
    """The lock a run holds beside its work directories while it lives (locks.hold_file): judged
    there, any run that sees the directories sees it, whatever its HOME or user."""
    return Path(tempfile.gettempdir()) / f"{_PREFIX}{run_id}.lock"


class VenvBackend:
    name = "venv"

    def __init__(self, spec: Spec, run_id: str, *, keep: bool = False,
                 issue_probes: tuple[tuple[str, str], ...] = ()) -> None:
        self.issue_probes = issue_probes
        self.spec = spec
        self.run_id = run_id
        self.keep = keep
        self.uv = find_uv_bin()
        self.shared = probing.SharedProbes()
        self.installs = install.RunInstalls()
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._cancelled = False
        self._live: locks._Held | None = None
        self._dir: Path | None = None  # the run's directory of cell work directories (_run_dir)

    def _hold(self) -> None:
        """This run is live where its venvs are, from before its first work directory."""
        with self._lock:
            if self._live is None:
                self._live = locks.hold_file(live_lock(self.run_id))

    def _run_dir(self) -> Path:
        """The run's directory in the temporary directory, which holds a work directory per cell
        (a venv and what its install needs), made on first use. Spread (paths.spread), with the
        cells' directories named at random: in the temporary directory itself each run's venvs
        were made where the last run's had just been removed (a run of 12 cells back to back with
        others: ext4_mkdir → recently_deleted 86, 335, 783, 980 perf samples over four runs)."""
        with self._lock:
            if self._dir is None:
                d = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{self.run_id}-"))  # ours alone (0700, made anew)
                paths.spread(d)
                if self.keep:  # no other run removes it (start()), nor this one (close())
                    _mark_kept(d)
                self._dir = d
            return self._dir

    def start(self) -> list[str]:
        """Remove the venvs dead runs left behind (a SIGKILL skips every finally): a run is live
        while it holds its lock beside them (a run of an older version: its lock in the state
        directory); a venv kept with --keep stays."""
        self._hold()
        notes = []
        live: dict[str, bool] = {}
        for d in sorted(Path(tempfile.gettempdir()).glob(f"{_PREFIX}*")):
            m = _WORK_DIR.match(d.name)
            if not m or not d.is_dir():
                continue  # not one of ours (a log file, another tool's directory)
            run_id = m.group(1)
            if run_id == self.run_id or (d / KEPT_MARK).exists():
                continue
            if run_id not in live:
                held = locks.file_held(live_lock(run_id))
                live[run_id] = locks.is_live(run_id) if held is None else held
            if not live[run_id]:
                shutil.rmtree(d, ignore_errors=True)
                if not d.exists():
                    notes.append(f"removed {d}, left by dead run {run_id}")
        return notes

    def close(self, *, interrupted: bool) -> None:
        """Nothing outlives a cell here (each venv goes when its cell ends, unless kept): the run's
        directory goes, and the run is no longer live."""
        with self._lock:
            live, self._live = self._live, None
            run_dir = self._dir
        if run_dir is not None and not self.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        if live is not None:
            live.release()

    def base_id(self, base: Base) -> str:
        """The interpreter and its exact version ("" when there is none)."""
        found = interpreters.find(base.python) if base.python else None
        return f"{found.path} {found.version}" if found else ""

    def skip_reason(self, base: Base) -> str | None:
        if base.dockerfile:
            return f"base {base.name} is a Dockerfile: the docker backend builds it and runs its cells"
        if base.python is None:
            return (f"base {base.name} names only an image; give it python: (a version such as "
                    '"3.11", or a path) to run it without an engine')
        if interpreters.find(base.python) is None:
            return f"base {base.name}: no interpreter {base.python!r} on this machine (PATH and pyenv searched)"
        return None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
        if self.spec.install.ca_bundle is not None:
            env["SSL_CERT_FILE"] = str(self.spec.install.ca_bundle)
        return env

    def run_cell(self, cell: Cell, log_dir: Path) -> Record:
        started = time.monotonic()
        record = Record.for_cell(cell, backend=self.name, run_id=self.run_id)
        self._hold()
        work = Path(tempfile.mkdtemp(dir=self._run_dir()))
        if self.keep:  # the cell's directory says so too (start() reads the run's mark, _run_dir)
            _mark_kept(work)
        try:
            verdict = self._run(cell, work, log_dir, record)
        finally:
            if self.keep:
                (log_dir / "venv-path").write_text(str(work / "venv") + "\n", encoding="utf-8")
            else:
                shutil.rmtree(work, ignore_errors=True)
        record.outcome, record.error = verdict.outcome, verdict.error
        record.duration_s = round(time.monotonic() - started, 2)
        return record

    def _run(self, cell: Cell, work: Path, log_dir: Path, record: Record) -> Verdict:
        base = self.spec.base(cell.base)
        found = interpreters.find(base.python or "")
        if found is None:
            return Verdict(Outcome.INFRA_ERROR, self.skip_reason(base) or "no interpreter")
        if base.gpus and not gpus.host_has_driver():
            return Verdict(Outcome.INFRA_ERROR, f"{gpus.NO_GPU_HOST}; base {base.name} asks for gpus: "
                                                f"{gpus.describe(base.gpus)}")
        record.engine = f"{os.uname().nodename}: {found.path}"
        record.base_id = self.base_id(base)
        venv = work / "venv"
        python = str(venv / "bin" / "python")
        secret = install.has_credentials(self.spec)

        def commands(offline: bool) -> list[list[str]]:
            return [[self.uv, "venv", "--quiet", "--python", found.path, str(venv)],
                    *install.uv_commands(cell, self.spec, self.uv, python, list(self.spec.install.find_links),
                                         index_in_config=secret, offline=offline)]

        log: list[str] = []
        env = self._env()
        if secret:  # index URLs with credentials: in a file only this user reads, not on command lines
            config = work / "uv.toml"
            config.touch(mode=0o600)
            config.write_text(install.uv_toml(self.spec, list(self.spec.install.find_links)), encoding="utf-8")
            env["UV_CONFIG_FILE"] = str(config)
        try:
            def resolve(pin: str) -> str | None:
                argv = install.resolve_command(cell, self.spec, self.uv, found.path, list(self.spec.install.find_links),
                                               pin, index_in_config=secret)
                done = self._proc(argv, env, work, _INSTALL_TIMEOUT_S)
                shown = [*argv[:-1], argv[-1].replace(shlex.quote(self.uv), "uv")]  # uv by its name, as _install
                return install.resolve_said(shown, done.exit_code, done.stdout, done.stderr, log)

            failed = self.installs.install(
                cell, lambda offline: self._install(commands(offline), env, work, log),
                lambda: shutil.rmtree(venv, ignore_errors=True), log, resolve=resolve)
            if failed is not None:
                return failed
        finally:
            (log_dir / "install.log").write_text(redact("".join(log)), encoding="utf-8")

        limits = self.spec.limits
        home = work / "home"
        home.mkdir()
        env = {k: os.environ[k] for k in ("PATH", *_PASSTHROUGH) if k in os.environ}
        env.update(HOME=str(home), LANG="C.UTF-8")
        printed = self._proc([python, str(probing.probes_dir() / probing.FINGERPRINT)], env, work, 60)
        fingerprint = printed.stdout.strip() if printed.exit_code == 0 else None

        def probe() -> probing.Probed:
            nonce = probing.new_nonce()
            probe_env = dict(env)
            probe_env.update(probing.environment(cell, nonce, limits.timeout_s, self.issue_probes,
                                                 pycache=str(work / "pycache"), gpus=base.gpus), HOME=str(home))
            if base.gpus:
                visible = gpus.visible_devices(base.gpus)
                if visible is not None:
                    probe_env["CUDA_VISIBLE_DEVICES"] = visible
            # Its probes run as the user anyway: the bytecode they write is no less trusted than the
            # venv they ran in, so they may add to what later cells share (probes/_bytecode.py).
            probe_env.update(COMPAT_MATRIX_PYC_OVERLAY=str(paths.cache_root() / "pyc"),
                             COMPAT_MATRIX_PYC_WRITABLE="1")
            ran = self._proc([python, str(probing.probes_dir() / "_driver.py")], probe_env, work,
                             probing.driver_timeout(limits.timeout_s))
            report, verdict = probing.conclude(ran, nonce, log_dir, "none")
            return probing.Probed(report, verdict, log_dir, cell.id)

        probed = self.shared.probe(cell, fingerprint, log_dir, probe)
        record.python, record.installed = probed.report.python, probed.report.installed
        return probed.verdict

    def _install(self, commands: list[list[str]], env: dict[str, str], work: Path, log: list[str]) -> Verdict | None:
        """Run the cell's installer commands; the verdict of the first that fails, else None."""
        for argv in commands:
            shown = ["uv", *argv[1:]] if argv[0] == self.uv else argv  # uv by its name, not its path
            log.append("$ " + shlex.join(shown) + "\n")
            done = self._proc(argv, env, work, _INSTALL_TIMEOUT_S)
            if done.timed_out:
                return Verdict(Outcome.INFRA_ERROR, f"the installer did not finish in {_INSTALL_TIMEOUT_S} s")
            log.append(done.stdout + done.stderr)
            if done.exit_code != 0:
                return classify_install(redact(done.stdout + done.stderr), returncode=done.exit_code,
                                        only_binary=self.spec.install.only_binary)
        return None

    def settled(self, timeout_s: float) -> None:
        pass  # no start-up of its own: its first cell's work is the interpreter's processes

    def idle(self) -> None:
        pass  # each cell's work directory goes when the cell ends

    def cancel(self) -> None:
        """Kill what the cells under way are running; their run_cell raises Cancelled."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        for proc in running:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _proc(self, argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> probing.RunResult:
        """Run one command of a cell in its own process group (so cancel() can take it down whole)."""
        with self._lock:
            if self._cancelled:
                raise Cancelled("the run was interrupted")
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
            self._running.add(proc)
        try:
            try:
                out, err = proc.communicate(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                timed_out = True
            except BaseException:  # an interrupt on this thread: the command goes with it
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        finally:
            with self._lock:
                self._running.discard(proc)
        with contextlib.suppress(OSError):  # what it left in its process group goes with it, pass or fail
            os.killpg(proc.pid, signal.SIGKILL)
        if self._cancelled:
            raise Cancelled("the run was interrupted")
        return probing.RunResult(None if timed_out else proc.returncode, out.decode("utf-8", "replace"),
                                 err.decode("utf-8", "replace"), timed_out=timed_out)
