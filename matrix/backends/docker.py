"""The docker backend: each cell installed from a container of its base, probed in a locked-down one.

Per base, once per machine: a prefix image (the base, its setup steps, the CA bundle, uv, the
probes; dockerfile.prefix), rebuilt only when one of those changes. Per base and run: a
workbench container of that image with host networking and the shared package cache volume, in
which each cell's venv is made and installed by uv (hard links into the cache: a wheel is
downloaded once per machine), by the workbench's agent (probes/_workbench.py: a command costs no
engine exec, and the workers' commands run side by side) in few commands (_install). Per base,
run and worker a prober
(backends/prober.py): a container with no network, a read-only root, no capabilities, memory and
pid limits and the cache volume mounted read-only, into which each cell's probe driver is exec'd
as nobody, and which is cleaned between cells (one-shot containers where the engine cannot count
a container's OOM kills).

A verdict comes only from the world under test: whatever the engine or a workbench does on its
own (a fault, a dropped connection, a container killed from outside, an exec it could not start,
a workbench's agent that does not answer as asked) is the cell's infra-error, never a timeout,
crash or build-error. A workbench lives exactly as
long as its run's process (engine.start), which is how any run tells a live run's objects and
venvs from a dead one's.

Receives an engine object (engine.DockerEngine, or a fake in unit tests) and never imports docker.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Protocol

from uv import find_uv_bin

from matrix import gpus, install, probing
from matrix.backends import dockerfile, prober
from matrix.backends.engine import (
    CELL_LABEL,
    HOST_LABEL,
    PROBE,
    ROLE_LABEL,
    RUN_LABEL,
    WORKBENCH,
    AgentGone,
    BuildResult,
    ContainerState,
    EngineFault,
    Sandbox,
)
from matrix.cells import Cell
from matrix.classify import Verdict, classify_install
from matrix.errors import ENGINE_GONE, Cancelled, redact
from matrix.probing import RunResult
from matrix.spec import Base, Spec
from matrix.store import Outcome, Record

# The run label of what outlives runs (prefix images, the package cache volume): `compat-matrix
# clean` removes them by it.
CACHE_RUN = "cache"
CACHE_VOLUME = "compat-matrix-cache"
CACHE_LABELS = {RUN_LABEL: CACHE_RUN}
# Where a credentialed run's uv configuration lives in the workbench (never in an image).
UV_TOML = "/opt/compat-matrix/uv.toml"
# A workbench's command exits with this when the base's Python does not run.
_NO_PYTHON = 3
# In a run's directory of venvs on the cache volume: the run was made with --keep, and no other
# run removes its venvs (`compat-matrix clean` does, with the volume).
KEEP_MARK = ".keep"
# A dead run's venvs are removed once its directory has been left alone this long (minutes): a run
# that started after the live runs were read is not among them, and its directory is new.
_DEAD_AFTER_MIN = 2
# The setup step of a prefix build that failed in the base's own command (the classic builder's words).
_STEP_FAILED = re.compile(r"The command '(?P<command>.*)' returned a non-zero code: (?P<code>-?\d+)", re.DOTALL)


class Engine(Protocol):
    description: str

    def ensure_image(self, ref: str) -> str | None: ...
    def build(self, context_dir: Path, tag: str) -> BuildResult: ...
    def build_context(self, context: IO[bytes], tag: str, *, dockerfile: str,
                      build_args: dict[str, str] | None = None) -> BuildResult: ...
    def ensure_volume(self, name: str, labels: dict[str, str]) -> None: ...
    def start(self, image: str, command: list[str], *, labels: dict[str, str], volumes: dict[str, str],
              sandbox: Sandbox | None = None, agent: bool = False) -> str: ...
    def state(self, container: str) -> ContainerState: ...
    def stopped(self, container: str, timeout_s: float) -> ContainerState: ...
    def put_files(self, container: str, files: dict[str, Path | bytes], mode: int = 0o644) -> None: ...
    def exec(self, container: str, command: list[str], environment: dict[str, str] | None = None, *,
             user: str | None = None, timeout_s: float | None = None,
             on_timeout: Callable[[], object] | None = None, what: str = "") -> RunResult: ...
    def remove(self, container: str) -> None: ...
    def run(self, image: str, command: list[str], *, environment: dict[str, str], labels: dict[str, str],
            memory: str, timeout_s: float, volumes: dict[str, str] | None = None,
            gpus: str | None = None) -> RunResult: ...
    def remove_labelled(self, run_id: str, cell: str | None = None, *, settle_s: float = 0.0) -> int: ...
    def live_runs(self) -> dict[str, bool]: ...
    def image_id(self, ref: str) -> str | None: ...
    def alive(self) -> bool: ...
    def connect(self) -> None: ...
    def close(self) -> None: ...


# What the probes look for in a team's image besides the cell's pins (what its probes know how to try).
IMAGE_PACKAGES = ("numpy", "scipy", "torch")


def dockerfile_tag(base: Base) -> str:
    """The image a base's own Dockerfile is built into: one per base and Dockerfile path."""
    digest = hashlib.sha256(f"{base.name}\0{base.dockerfile}".encode()).hexdigest()[:12]
    return f"compat-matrix-dockerfile:{base.name.lower()}-{digest}"


def cell_key(cell: Cell) -> str:
    """A short, path- and tag-safe name for a cell (ids can be long and hold upper-case letters)."""
    return hashlib.sha256(cell.id.encode()).hexdigest()[:12]


def venv_name(run_id: str, cell: Cell) -> str:
    """The name of a cell's venv in its run's directory of venvs: new in every run (the directory
    is spread over the file system by the hash of this name, dockerfile.SPREAD)."""
    return hashlib.sha256(f"{run_id}\0{cell.id}".encode()).hexdigest()[:12]


class _Base:
    """What the cells of one base share in a run: its prefix image and workbench, or why not.

    One workbench for all the workers, not one each: its agent runs their commands side by side
    (no engine exec, which the engine ran one at a time into one container), and a container
    fewer is ~0.28 s of the engine's CPU fewer (its create, start, kill and removal), on a run's
    way when the cores are busy."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready = False
        self.image = ""
        self.failed: Verdict | None = None
        self.bench_lock = threading.Lock()  # held while the workbench is started, or wheels copied in
        self.bench = ""  # the workbench up now, "" when none is (not yet, or its agent was lost)
        self.benches = 0  # workbenches started for the base in this run
        self.wheels: set[str] = set()  # the local wheels copied into the workbench up now
        self.users = 0  # cells in the workbench now
        self.most = 0  # the most cells that have been in it at once (a prober started ahead for each)
        self.probers: prober.Probers | None = None  # where its cells' probes run

    @staticmethod
    def failing(verdict: Verdict) -> _Base:
        """A failure of this cell only (not remembered for the base's other cells)."""
        b = _Base()
        b.failed = verdict
        return b


class _NoPython(Exception):
    """The base's Python does not run in its workbench (the base's `failed` says how)."""


class DockerBackend:
    name = "docker"

    def __init__(self, engine: Engine, spec: Spec, run_id: str, *, keep: bool = False,
                 issue_probes: tuple[tuple[str, str], ...] = ()) -> None:
        self.engine = engine
        self.issue_probes = issue_probes
        # A base built from the team's Dockerfile is, from here on, the image that build tags.
        self.spec = replace(spec, bases=tuple(replace(b, image=dockerfile_tag(b)) if b.dockerfile else b
                                              for b in spec.bases))
        self._dockerfile_failed: dict[str, Verdict] = {}
        self.run_id = run_id
        self.keep = keep
        self.uv_binary = Path(find_uv_bin())
        self.shared = probing.SharedProbes()
        self.installs = install.RunInstalls()
        self._lock = threading.Lock()
        self._base_errors: dict[str, str | None] = {}
        self._base_ids: dict[str, str] = {}
        self._bases: dict[str, _Base] = {}
        self._kept: list[str] = []  # with --keep: where each cell's venv is, and how to look inside
        self._through: dict[str, list[str]] = {}  # base → the cells that are through (their venvs' names)
        self._tidying: list[threading.Thread] = []  # idle workers' tidies (idle())
        self._tidy_failed: list[Exception] = []  # what they raised
        # Set once the first workbench is up (or could not be) or a cell is through: settled().
        self._settled = threading.Event()
        self._cancelled = False

    def start(self) -> list[str]:
        """Remove what dead runs left on the engine (killed with SIGKILL, say).

        Whether a run is alive is read on the engine, where its objects are: a run's workbench
        lives as long as its process (engine.start), so a run with none running is over, whatever
        state directory, user or host it ran from; a live concurrent run is never touched. Dead
        runs' venvs on the cache volume go when this run's first workbench starts (not those of a
        --keep run)."""
        notes = []
        for run_id, alive in sorted(self.engine.live_runs().items()):
            if run_id != self.run_id and not alive:
                n = self.engine.remove_labelled(run_id)
                notes.append(f"removed {n} object(s) left on the engine by dead run {run_id}")
        return notes

    def kept(self) -> list[str]:
        """With --keep: each kept venv, one line each (cell, where, how to look inside)."""
        with self._lock:
            return list(self._kept)

    def close(self, *, interrupted: bool) -> None:
        """Remove whatever the run left on the engine (all of it unless --keep): the probers go
        while the venvs are removed in a workbench, then the workbenches and whatever else is
        left, by label."""
        try:
            for b in self._bases.values():
                if b.probers is not None:
                    b.probers.settle(timeout_s=5.0 if interrupted else 60.0)
            removing = []
            if not self.keep:
                probers = [c for b in self._bases.values() if b.probers is not None for c in b.probers.take_all()]
                removing = [threading.Thread(target=self.engine.remove, args=(c,), name="compat-matrix-remove",
                                             daemon=True) for c in probers]
                for thread in removing:
                    thread.start()
            with self._lock:
                tidying, self._tidying = self._tidying, []
            for thread in tidying:  # an idle worker's tidy (idle()): it holds a workbench
                thread.join(timeout=5.0 if interrupted else 600.0)
            if not self.keep:
                for b in self._bases.values():
                    if b.bench:  # gone already after an interrupt, maybe: then the next run's bench
                        self._remove(b.bench)
                for thread in removing:
                    thread.join(timeout=60.0)
                # An interrupted build goes on in the daemon for a moment: wait it out.
                self.engine.remove_labelled(self.run_id, settle_s=8.0 if interrupted else 0.0)
            if self._tidy_failed:
                raise EngineFault(f"tidying finished cells failed: {self._tidy_failed[0]}")
        finally:
            self.engine.close()

    def idle(self) -> None:
        """A worker with no cell left to take removes the venvs of the cells that are through (in
        a workbench no cell is using), while the others finish: less for close() to remove. In
        the background: the worker is through at once, so when the others finish first the tidy
        does not hold up the run's end (close() waits for it instead, while the table is written)."""
        thread = threading.Thread(target=self._tidy_quietly, name="compat-matrix-tidy", daemon=True)
        with self._lock:
            self._tidying.append(thread)
        thread.start()

    def _tidy_quietly(self) -> None:
        try:
            self._tidy()
        except Exception as e:  # noqa: BLE001 - said by close(), not as a thread's traceback
            with self._lock:
                self._tidy_failed.append(e)

    def _tidy(self) -> None:
        with self._lock:
            through, self._through = self._through, {}
        for base, venvs in through.items():
            b = self._bases.get(base)
            if b is None:
                continue  # no cell of it got as far as a venv
            bench = b.bench  # (its agent runs this beside the cells' installs)
            if bench:
                self._remove(bench, venvs)

    def settled(self, timeout_s: float) -> None:
        """Wait until the run's first workbench is up (the engine's client loaded, its first
        container started: 0.2-0.3 s of the interpreter, on every cell's way), or could not be."""
        self._settled.wait(timeout_s)

    def cancel(self) -> None:
        """An interrupt: stop the cells under way (their workbenches and probers go)."""
        self._cancelled = True
        self._settled.set()
        try:
            self.engine.remove_labelled(self.run_id)
        except EngineFault:
            pass  # close() sweeps again

    def skip_reason(self, base: Base) -> str | None:
        base = self.spec.base(base.name)  # a Dockerfile base: the image its build tags
        if base.image is None:
            return f"base {base.name} names no image (the docker backend builds from an image)"
        return None

    def base_id(self, base: Base) -> str:
        """The base image's id on the engine ("" when it is not there to say); asked once per
        base and run, like _base_error, not once per cell."""
        base = self.spec.base(base.name)  # a Dockerfile base: the image its build tags
        with self._lock:
            if base.name not in self._base_ids:
                image_id = None
                if base.image is not None and not self._base_error(base.name):
                    image_id = self.engine.image_id(base.image)
                self._base_ids[base.name] = image_id or ""
            return self._base_ids[base.name]

    def _base_error(self, base_name: str) -> str | None:
        # Once per base: a missing image is the same failure for all of its cells.
        if base_name not in self._base_errors and self.spec.base(base_name).dockerfile:
            self._base_errors[base_name] = self._build_dockerfile(self.spec.base(base_name))
        if base_name not in self._base_errors:
            image = self.spec.base(base_name).image
            self._base_errors[base_name] = (self.engine.ensure_image(image) if image is not None
                                            else f"base {base_name} names no image")
        return self._base_errors[base_name]

    def _build_dockerfile(self, base: Base) -> str | None:
        """Build a base's own Dockerfile (its directory the context), tagged as the base's image and
        kept like the prefix images (labelled cache: `compat-matrix clean` removes it; the engine's
        layer cache makes an unchanged rebuild quick). A build that fails is its cells' verdict, as
        `check` has it; None when it built."""
        from matrix.backends import imagecheck  # (6 ms: only a run with a Dockerfile base needs it)

        assert base.dockerfile is not None and base.image is not None
        path = Path(base.dockerfile)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self._dockerfile_failed[base.name] = Verdict(Outcome.INFRA_ERROR, f"{path} cannot be read: {e}")
            return None
        built = imagecheck.build(self.engine, path, text, base.image, {RUN_LABEL: CACHE_RUN}, {})
        if not built.ok:
            self._dockerfile_failed[base.name] = imagecheck.build_failure(built, path)
        return None

    def run_cell(self, cell: Cell, log_dir: Path) -> Record:
        started = time.monotonic()
        record = Record.for_cell(cell, backend=self.name, run_id=self.run_id, engine=self.engine.description)
        name = venv_name(self.run_id, cell)
        venv = f"{dockerfile.VENVS}/{self.run_id}/{name}"
        try:
            verdict = self._run(cell, log_dir, record, venv)
        except EngineFault as e:
            if self._cancelled:
                raise Cancelled("the run was interrupted") from None
            if not self.engine.alive():
                # Every later cell would fail alike: the sweep stops on this message.
                e = EngineFault(f"{ENGINE_GONE} ({e})")
            verdict = Verdict(Outcome.INFRA_ERROR, redact(str(e)))
        finally:
            self._settled.set()  # (a cell that never got as far as a workbench: a failed base, say)
            # The venv stays until a worker is idle or the run ends (it is hard links into the cache,
            # little on disk): removed with others in one go, one exec fewer a cell.
            if not self.keep:
                with self._lock:
                    self._through.setdefault(cell.base, []).append(name)
            bench = self._bases.get(cell.base)
            if self.keep and bench is not None and bench.benches and not self._cancelled:
                look = f"docker run --rm -it -v {CACHE_VOLUME}:{dockerfile.CACHE} {bench.image} {venv}/bin/python"
                (log_dir / "venv-path").write_text(f"{venv} on volume {CACHE_VOLUME}; look inside with\n  {look}\n",
                                                   encoding="utf-8")
                with self._lock:
                    self._kept.append(f"{cell.id}: {venv} on volume {CACHE_VOLUME} ({look})")
        record.outcome, record.error = verdict.outcome, verdict.error
        record.duration_s = round(time.monotonic() - started, 2)
        return record

    def labels(self, cell: Cell | None = None, *, probe: bool = False) -> dict[str, str]:
        """A workbench's labels; with `cell`, that cell's probe container's; with `probe`, a prober's."""
        out = {RUN_LABEL: self.run_id, HOST_LABEL: socket.gethostname(), ROLE_LABEL: WORKBENCH}
        if cell is not None or probe:
            out[ROLE_LABEL] = PROBE
        if cell is not None:
            out[CELL_LABEL] = cell_key(cell)
        return out

    def _connect(self) -> None:
        try:
            self.engine.connect()
        except EngineFault:
            pass  # the next call into the engine says so

    def _remove(self, bench: str, venvs: list[str] | None = None) -> None:
        """Remove cell venvs of this run (`venvs`: their names; None: the run's whole directory)
        in a workbench, four at a time for every core (rm waits on the file system more than it
        computes: 12 venvs in 0.15-0.17 s, 0.22-0.24 s one per core, 0.35 s one at a time), then
        whatever is left (without GNU xargs: all of it, one at a time)."""
        mine = shlex.quote(f"{dockerfile.VENVS}/{self.run_id}")
        names = f"printf '%s\\n' {shlex.join(venvs)}" if venvs is not None else "ls -A"
        rest = f"rm -rf {shlex.join(venvs)}" if venvs is not None else f"cd / && rm -rf {mine}"
        self._quietly(bench, ["sh", "-c", f"cd {mine} 2>/dev/null || exit 0; {names} | xargs -r -n 1 -P "
                             f"\"$(( $(nproc 2>/dev/null || echo 2) * 4 ))\" rm -rf; {rest}"])

    def _quietly(self, container: str, command: list[str]) -> None:
        try:
            self.engine.exec(container, command)
        except EngineFault:
            pass  # the end-of-run sweep by label (and the next run's start) tries again

    def _check(self) -> None:
        if self._cancelled:
            raise Cancelled("the run was interrupted")

    def _prepare(self, base: Base, log_dir: Path) -> _Base:
        """The base's prefix image (built when missing) and the package cache volume."""
        with self._lock:
            b = self._bases.setdefault(base.name, _Base())
        with b.lock:
            if b.ready:
                return b
            self._check()
            # The SDK's import (0.13 s; the base's id came over the socket without it) meanwhile:
            # the prefix's digest reads the 38 MB uv binary.
            threading.Thread(target=self._connect, name="compat-matrix-connect", daemon=True).start()
            ctx = dockerfile.prefix(base, self.spec, self.uv_binary, CACHE_LABELS)
            digest = hashlib.sha256((self.base_id(base) + ctx.digest()).encode()).hexdigest()
            b.image = f"compat-matrix-base:{digest[:16]}"
            if self.engine.image_id(b.image) is None:
                with tempfile.TemporaryDirectory(prefix="compat-matrix-ctx-") as tmp:
                    ctx.write(Path(tmp))
                    built = self.engine.build(Path(tmp), b.image)
                (log_dir / "prefix-build.log").write_text(redact(built.log), encoding="utf-8")
                if not built.ok:
                    why = prefix_failure(built, base)
                    if why.outcome is Outcome.INFRA_ERROR:
                        return _Base.failing(why)  # the network, say: the next cell tries again
                    b.failed = Verdict(Outcome.BUILD_ERROR, f"the base's setup failed: {why.error}")
                    b.ready = True
                    return b
            self.engine.ensure_volume(CACHE_VOLUME, CACHE_LABELS)
            if base.gpus:
                no_gpu = self._gpus_refused(b.image, base)
                if no_gpu is not None:
                    b.failed = no_gpu  # for all of the base's cells: no install for GPUs that are not there
            b.ready = True
            return b

    def _gpus_refused(self, image: str, base: Base) -> Verdict | None:
        """Whether the engine gives the base's GPUs, asked once per base before any install (a
        torch CUDA build is gigabytes): an infra-error saying so when it does not. Any other
        fault of this container is left to the cells' own probe containers."""
        try:
            self.engine.run(image, ["true"], environment={}, labels=self.labels(), memory="64m",
                            timeout_s=60.0, gpus=base.gpus)
        except EngineFault as e:
            if gpus.NO_GPU in str(e):
                return Verdict(Outcome.INFRA_ERROR, f"{redact(str(e))}; base {base.name} asks for gpus: "
                                                    f"{gpus.describe(base.gpus or '')}")
        return None

    def _start_bench(self, b: _Base, base: Base, *, first: bool) -> str:
        """Start a workbench of the base's prefix image; "" (and b.failed) when its Python does not run.

        Its command checks that the base's Python runs at all, then runs the workbench's agent in
        it (probes/_workbench.py: the workbench's commands cost no engine exec). Its first command
        sets it up: for the base's first, the venvs of dead runs go (never a live run's, of any
        state directory or host, nor a --keep run's), and this run's cells get their directory;
        every one gets the local find-links directories, and a credentialed run's uv
        configuration. A fault of the engine or the workbench on the way is this cell's
        infra-error, never the base's verdict."""
        python = shlex.quote(base.image_python)
        # A Python killed by a signal (128 + N) is not the base's word on it: that status goes on.
        command = ["sh", "-c", f"{python} -c '' || {{ rc=$?; [ $rc -gt 128 ] && exit $rc; exit {_NO_PYTHON}; }}; "
                               f"exec {python} -I {dockerfile.WORKBENCH_AGENT}"]
        try:
            bench = self.engine.start(b.image, command, labels=self.labels(),
                                      volumes={CACHE_VOLUME: dockerfile.CACHE}, agent=True)
        except EngineFault as e:
            if _NO_SHELL.search(str(e)):  # the base itself: it has no sh for the installs to run in
                b.failed = Verdict(Outcome.BUILD_ERROR, f"the environment has no shell: {base.image}: {e}")
                return ""
            raise
        find_links = dockerfile.find_links_all(self.spec)
        links = [p for p in find_links if "://" not in p]
        script = []
        if first:
            live = {run for run, alive in self.engine.live_runs().items() if alive} | {self.run_id}
            script.append(reap_script(dockerfile.VENVS, live))
        mine = f"{dockerfile.VENVS}/{self.run_id}"
        script.append(f"mkdir -p {shlex.join([mine, *links])}")
        if first:  # the cells' venvs spread over the file system (dockerfile.SPREAD)
            script.append(f"{python} -I -c {shlex.quote(dockerfile.SPREAD)} {shlex.quote(mine)} 2>/dev/null || :")
        if self.keep:
            script.append(f"touch {shlex.quote(f'{mine}/{KEEP_MARK}')}")
        try:
            setup = self.engine.exec(bench, ["sh", "-c", "\n".join(script)])
        except EngineFault as fault:
            # Its agent's stream ends a moment before the engine has the container's end.
            state = self.engine.stopped(bench, timeout_s=10.0)  # an engine that is gone raises: the fault stands
            if state.running:
                raise
            if state.exit_code == _NO_PYTHON:
                last = [ln for ln in state.logs.splitlines() if ln.strip()]
                b.failed = Verdict(Outcome.BUILD_ERROR, f"the environment cannot run Python: {base.image_python} "
                                   f"in {base.image}: {last[-1] if last else 'exited at once'}")
                return ""
            raise EngineFault(f"the workbench stopped while being set up ({state.describe()}): {fault}") from fault
        if setup.exit_code != 0:
            raise EngineFault(f"preparing the workbench (exit code {setup.exit_code}): "
                              f"{(setup.stdout + setup.stderr).strip()[-300:] or 'no output'}")
        if install.has_credentials(self.spec):
            conf = install.uv_toml(self.spec, find_links).encode()
            self.engine.put_files(bench, {UV_TOML: conf}, mode=0o600)
        return bench

    @contextmanager
    def _workbench(self, b: _Base, base: Base, cell: Cell) -> Iterator[str]:
        """The base's workbench, shared by the cells under way (started by the first cell that
        needs it; the others wait for it), with the cell's local find-links wheels copied in.
        A cell that comes while more cells are in it than ever before has a prober started ahead
        for it (one per worker): while its first install runs, or while the workbench starts when
        another cell is starting it."""
        with b.lock:
            b.users += 1
            ahead = b.users > b.most
            b.most = max(b.most, b.users)
            if ahead and (b.bench or b.bench_lock.locked()):  # up, or another cell is starting it
                ahead = False
                self._probers_locked(b, base).prestart()
        try:
            with b.bench_lock:
                bench = b.bench
                if not bench:
                    try:
                        self._check()
                        bench = self._start_bench(b, base, first=not b.benches)
                    finally:
                        self._settled.set()
                    if bench:
                        with b.lock:
                            b.bench, b.wheels = bench, set()
                            b.benches += 1
                    if not bench:
                        raise _NoPython()
                if ahead:  # this worker's prober starts while its first cell installs
                    self._probers(b, base).prestart()
                missing = {p: w for p, w in dockerfile.cell_wheels(cell, self.spec).items() if p not in b.wheels}
                if missing:
                    self.engine.put_files(bench, dict(missing))
                    b.wheels |= set(missing)
            yield bench
        except AgentGone:
            # It runs nothing more: the cells now in it fail alike, the next one starts a new one.
            with b.lock:
                gone = bool(bench) and b.bench == bench  # ("": lost while being started, never up)
                if gone:
                    b.bench = ""
            if gone and not self.keep:
                self.engine.remove(bench)
            raise
        finally:
            with b.lock:
                b.users -= 1

    def _install(self, bench: str, cell: Cell, venv: str, env: dict[str, str], log: list[str], *,
                 offline: bool, fingerprint: list[str]) -> Verdict | None:
        """Make the cell's venv and run its installer steps in a workbench; the verdict of the
        first that fails, else None, and then the environment's fingerprint in `fingerprint`.

        In few commands (a process each, in the workbench's agent): the venv is made in the
        command of the first installer step (`a && b` stops at the first that fails, with its
        status and only the words of the failing step, the venv's being quiet), and the last one,
        when it passes, goes on to compile the bytecode of the distributions no cell has brought
        yet (here, where no package code runs: the probe containers only read it,
        probes/_bytecode.py) and print the fingerprint after a marker of this command's own.
        Installer steps keep a command each: a failure's words are its step's alone."""
        base = self.spec.base(cell.base)
        steps = dockerfile.install_commands(cell, self.spec, venv, offline=offline)
        first = [dockerfile.venv_command(base, venv)]
        if base.dockerfile:  # on top of what the team's image has installed
            first.append(dockerfile.image_packages_command(base, venv))
        chains = [[*first, steps[0]], *([step] for step in steps[1:])] if steps else [first]
        mark = f"compat-matrix-fingerprint-{secrets.token_hex(8)}"
        python = shlex.quote(f"{venv}/bin/python")
        then = (f"{python} {dockerfile.BYTECODE} compile {dockerfile.PYC} >/dev/null 2>&1; printf '\\n%s ' {mark}; "
                f"{python} {dockerfile.FINGERPRINT} 2>/dev/null || :")
        for i, chain in enumerate(chains):
            last = i == len(chains) - 1
            self._check()
            log.extend("$ " + shlex.join(argv) + "\n" for argv in chain)
            script = " && ".join(shlex.join(argv) for argv in chain) + (f" && {{ {then}; }}" if last else "")
            done = self.engine.exec(bench, ["sh", "-c", script] if len(chain) > 1 or last else chain[0], env)
            # (an engine fault raises: never the installer's output)
            self._check()
            stdout, found, printed = done.stdout.rpartition(f"\n{mark} ")
            if not found:
                stdout = done.stdout
            log.append(stdout + done.stderr)
            if done.exit_code != 0:
                state = self.engine.state(bench)
                if not state.running:  # the step died with its workbench: nothing the installer said
                    raise EngineFault(f"the workbench stopped during an install step ({state.describe()})")
                return classify_install(redact(stdout + done.stderr), returncode=done.exit_code,
                                        only_binary=self.spec.install.only_binary)
            if last and found and printed.strip():
                fingerprint.append(printed.strip())
        return None

    def _resolve(self, bench: str, cell: Cell, pin: str, env: dict[str, str], log: list[str]) -> str | None:
        """uv's online resolve of one pin of the cell, in the workbench (install.resolve_command)."""
        base = self.spec.base(cell.base)
        argv = install.resolve_command(cell, self.spec, dockerfile.UV, base.image_python,
                                       dockerfile.find_links(cell, self.spec), pin,
                                       index_in_config=install.has_credentials(self.spec))
        self._check()
        done = self.engine.exec(bench, argv, env)
        return install.resolve_said(argv, done.exit_code, done.stdout, done.stderr, log)

    def _run(self, cell: Cell, log_dir: Path, record: Record, venv: str) -> Verdict:
        base_error = self._base_error(cell.base)
        if base_error:
            return Verdict(Outcome.INFRA_ERROR, base_error)
        if cell.base in self._dockerfile_failed:  # the team's Dockerfile did not build
            return self._dockerfile_failed[cell.base]
        base = self.spec.base(cell.base)
        record.base_id = self.base_id(base)
        b = self._prepare(base, log_dir)
        if b.failed:
            return b.failed
        env = {"UV_CONFIG_FILE": UV_TOML} if install.has_credentials(self.spec) else {}
        log: list[str] = []
        try:
            with self._workbench(b, base, cell) as bench:
                printed: list[str] = []
                try:
                    failed = self.installs.install(
                        cell, lambda offline: self._install(bench, cell, venv, env, log, offline=offline,
                                                            fingerprint=printed),
                        lambda: self.engine.exec(bench, ["rm", "-rf", venv]), log,
                        resolve=lambda pin: self._resolve(bench, cell, pin, env, log))
                    if failed is not None:
                        return failed
                finally:
                    (log_dir / "install.log").write_text(redact("".join(log)), encoding="utf-8")
        except _NoPython:
            assert b.failed is not None
            return b.failed
        fingerprint = printed[-1] if printed else None
        limits = self.spec.limits

        def probe() -> probing.Probed:
            self._check()
            nonce = probing.new_nonce()
            environment = {**probing.environment(cell, nonce, limits.timeout_s, self.issue_probes, gpus=base.gpus,
                                                 also=IMAGE_PACKAGES if base.dockerfile else ()),
                           "COMPAT_MATRIX_PYC_OVERLAY": dockerfile.PYC}
            ran = self._probe_run(b, base, cell, [f"{venv}/bin/python", dockerfile.DRIVER], environment, log_dir,
                                  nonce)
            report, verdict = probing.conclude(ran, nonce, log_dir, limits.memory)
            return probing.Probed(report, verdict, log_dir, cell.id)

        probed = self.shared.probe(cell, fingerprint, log_dir, probe)
        record.python, record.installed = probed.report.python, probed.report.installed
        return probed.verdict


    def _probers(self, b: _Base, base: Base) -> prober.Probers:
        with b.lock:
            return self._probers_locked(b, base)

    def _probers_locked(self, b: _Base, base: Base) -> prober.Probers:
        if b.probers is None:
            b.probers = prober.Probers(self.engine, b.image, labels=self.labels(probe=True),
                                       volumes={CACHE_VOLUME: dockerfile.CACHE},
                                       sandbox=Sandbox(self.spec.limits.memory, base.gpus))
        return b.probers

    def _probe_run(self, b: _Base, base: Base, cell: Cell, command: list[str], environment: dict[str, str],
                   log_dir: Path, nonce: str) -> RunResult:
        """The driver's run: exec'd into one of the base's probers, or, where the engine gives
        none (prober.NoCount), in a locked-down container of its own."""
        limits = self.spec.limits
        timeout_s = probing.driver_timeout(limits.timeout_s)
        probers = self._probers(b, base)

        def counted(ran: RunResult) -> prober.Ending | None:
            """What the driver says of its run (its own count of OOM kills, its clean-up), when it
            ended in order."""
            report = probing.parse(ran.stdout, nonce)
            if ran.exit_code != 0 or not report.complete or report.oom_kills is None:
                return None
            return prober.Ending(report.oom_kills, report.oom_total if report.cleaned else None)

        if not probers.unsupported:
            try:
                ran, container = probers.run(command, environment, timeout_s, counted)
                (log_dir / "prober").write_text(f"probed in container {container[:12]} (a prober of the run)\n",
                                                encoding="utf-8")
                return ran
            except prober.NoCount:
                pass  # this engine's containers cannot tell an OOM of theirs: one container per cell
        return self.engine.run(b.image, command, environment=environment, labels=self.labels(cell),
                               memory=limits.memory, timeout_s=timeout_s, volumes={CACHE_VOLUME: dockerfile.CACHE},
                               gpus=base.gpus)


# The engine's words when a container's command cannot start for want of a shell in the image.
_NO_SHELL = re.compile(r'exec: "sh": executable file not found|"sh": no such file or directory')


def prefix_failure(built: BuildResult, base: Base) -> Verdict:
    """Why a prefix image did not build. Only a setup step of the base's own (a RUN line the user
    wrote) failing is the base's failure, and then its output is classified like an installer's
    (killed by a signal, no output, the network: infra). Anything else (a COPY, the engine's own
    error, a build that ended without the builder's "returned a non-zero code") is infra."""
    m = _STEP_FAILED.search(built.error)
    if m is None or not any(m["command"].endswith(step) for step in base.setup):
        return Verdict(Outcome.INFRA_ERROR, f"the prefix image did not build: {redact(built.error) or 'no error'}")
    # The failing step's own output: the lines after its "Step N/M : RUN ..." line, less the builder's.
    lines = redact(built.log).splitlines()
    start = max((i for i, ln in enumerate(lines) if ln.startswith("Step ")), default=-1) + 1
    output = "\n".join(ln for ln in lines[start:] if not ln.startswith((" ---> ", "Removing intermediate container"))
                       and not _STEP_FAILED.search(ln))
    return classify_install(output, returncode=int(m["code"]), only_binary=False)


def reap_script(venvs: str, live: set[str]) -> str:
    """Shell lines that remove the venv directories of dead runs from the cache volume: a run
    directory whose run is not `live`, that holds no KEEP_MARK, and that nobody has touched for
    _DEAD_AFTER_MIN minutes (a run that began after `live` was read has a new directory)."""
    spared = "|".join(shlex.quote(r) for r in sorted(live)) or "''"
    return (f"cd {shlex.quote(venvs)} 2>/dev/null && for d in *; do "
            f"case \"$d\" in {spared}) continue;; esac; "
            f"[ -d \"$d\" ] && [ ! -e \"$d/{KEEP_MARK}\" ] || continue; "
            f"[ -n \"$(find \"$d\" -maxdepth 0 -mmin +{_DEAD_AFTER_MIN})\" ] && rm -rf \"$d\"; "
            "done; cd /")
