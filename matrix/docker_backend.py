"""The docker backend: one throwaway image per cell, probes run in a locked-down container.

Receives an engine object (engine.DockerEngine, or a fake in unit tests) and never imports docker.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

from matrix import dockerfile, install, locks, probing
from matrix.cells import Cell
from matrix.classify import Outcome, Verdict, classify_install
from matrix.engine import CELL_LABEL, HOST_LABEL, RUN_LABEL, BuildResult, EngineFault
from matrix.errors import ENGINE_GONE
from matrix.install import redact
from matrix.probing import RunResult
from matrix.spec import Base, Spec
from matrix.store import Record


class Engine(Protocol):
    description: str

    def ensure_image(self, ref: str) -> str | None: ...
    def build(self, context_dir: Path, tag: str) -> BuildResult: ...
    def run(self, image: str, command: list[str], *, environment: dict[str, str],
            labels: dict[str, str], memory: str, timeout_s: float) -> RunResult: ...
    def remove_labelled(self, run_id: str, cell: str | None = None, *, settle_s: float = 0.0) -> int: ...
    def runs_of_host(self, host: str) -> set[str]: ...
    def image_id(self, ref: str) -> str | None: ...
    def alive(self) -> bool: ...
    def close(self) -> None: ...


def cell_key(cell: Cell) -> str:
    """A short, tag-safe name for a cell (ids can be long and hold upper-case letters)."""
    return hashlib.sha256(cell.id.encode()).hexdigest()[:12]


class DockerBackend:
    name = "docker"

    def __init__(self, engine: Engine, spec: Spec, run_id: str, *, keep: bool = False,
                 issue_probes: tuple[tuple[str, str], ...] = ()) -> None:
        self.engine = engine
        self.issue_probes = issue_probes
        self.spec = spec
        self.run_id = run_id
        self.keep = keep
        self._base_errors: dict[str, str | None] = {}
        self._base_ids: dict[str, str] = {}

    def start(self) -> list[str]:
        """Remove what dead runs of this host left on the engine (killed with SIGKILL, say).

        A run is dead when nobody holds its lock; a live concurrent run, here or on another host
        sharing the engine, is never touched.
        """
        notes = []
        for run_id in sorted(self.engine.runs_of_host(socket.gethostname()) - {self.run_id}):
            if not locks.is_live(run_id):
                n = self.engine.remove_labelled(run_id)
                notes.append(f"removed {n} object(s) left on the engine by dead run {run_id}")
        return notes

    def close(self, *, interrupted: bool) -> None:
        """Remove whatever the run left on the engine (all of it unless --keep)."""
        try:
            if not self.keep:
                # An interrupted build goes on in the daemon for a moment: wait it out.
                self.engine.remove_labelled(self.run_id, settle_s=8.0 if interrupted else 0.0)
        finally:
            self.engine.close()

    def skip_reason(self, base: Base) -> str | None:
        if base.image is None:
            return f"base {base.name} names no image (the docker backend builds from an image)"
        return None

    def base_id(self, base: Base) -> str:
        """The base image's id on the engine ("" when it is not there to say); asked once per
        base and run, like _base_error, not once per cell."""
        if base.name not in self._base_ids:
            image_id = None
            if base.image is not None and not self._base_error(base.name):
                image_id = self.engine.image_id(base.image)
            self._base_ids[base.name] = image_id or ""
        return self._base_ids[base.name]

    def _base_error(self, base_name: str) -> str | None:
        # Once per base: a missing image is the same failure for all of its cells.
        if base_name not in self._base_errors:
            self._base_errors[base_name] = self.engine.ensure_image(self.spec.base(base_name).image)
        return self._base_errors[base_name]

    def run_cell(self, cell: Cell, log_dir: Path) -> Record:
        started = time.monotonic()
        record = Record.for_cell(cell, backend=self.name, run_id=self.run_id, engine=self.engine.description)
        try:
            verdict = self._run(cell, log_dir, record)
        except EngineFault as e:
            if not self.engine.alive():
                # Every later cell would fail alike: the sweep stops on this message.
                e = EngineFault(f"{ENGINE_GONE} ({e})")
            verdict = Verdict(Outcome.INFRA_ERROR, redact(str(e)))
        finally:
            if not self.keep:
                try:
                    self.engine.remove_labelled(self.run_id, cell=cell_key(cell))
                except EngineFault:
                    pass  # the end-of-run sweep by label tries again
        record.outcome, record.error = verdict.outcome, verdict.error
        record.duration_s = round(time.monotonic() - started, 2)
        return record

    def labels(self, cell: Cell) -> dict[str, str]:
        return {RUN_LABEL: self.run_id, CELL_LABEL: cell_key(cell), HOST_LABEL: socket.gethostname()}

    def image_tag(self, cell: Cell) -> str:
        return f"compat-matrix-cell:{self.run_id.lower()}-{cell_key(cell)}"

    def _run(self, cell: Cell, log_dir: Path, record: Record) -> Verdict:
        base_error = self._base_error(cell.base)
        if base_error:
            return Verdict(Outcome.INFRA_ERROR, base_error)
        record.base_id = self.base_id(self.spec.base(cell.base))
        tag = self.image_tag(cell)
        server = _SecretServer() if install.has_credentials(self.spec) else None
        with server or contextlib.nullcontext(), tempfile.TemporaryDirectory(prefix="compat-matrix-ctx-") as tmp:
            ctx = dockerfile.context(cell, self.spec, self.labels(cell),
                                     server.url if server else dockerfile.SECRET_URL_PLACEHOLDER)
            if server:
                server.content = ctx.pip_conf
            (log_dir / "Dockerfile").write_text(redact(ctx.dockerfile), encoding="utf-8")
            ctx.write(Path(tmp))
            built = self.engine.build(Path(tmp), tag)
        (log_dir / "build.log").write_text(redact(built.log), encoding="utf-8")
        if not built.ok:
            return classify_install(redact(built.log))

        limits = self.spec.limits
        nonce = probing.new_nonce()
        ran = self.engine.run(
            tag, [dockerfile.VENV_PYTHON, dockerfile.DRIVER],
            environment=probing.environment(cell, nonce, limits.timeout_s, self.issue_probes),
            labels=self.labels(cell), memory=limits.memory,
            timeout_s=probing.driver_timeout(limits.timeout_s),
        )
        report, verdict = probing.conclude(ran, nonce, log_dir, limits.memory)
        record.python, record.installed = report.python, report.installed
        return verdict


class _SecretServer:
    """Serves a credentialed build's pip configuration on the loopback for as long as the build.

    The classic builder has no build secrets; the build runs with host networking, so its RUN
    steps reach 127.0.0.1 here. The address holds a one-time token and dies with the build, so
    what `docker history` records of the RUN line is useless afterwards.
    """

    def __init__(self) -> None:
        self.content: str | None = None
        token = secrets.token_hex(16)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path != f"/{token}" or outer.content is None:
                    self.send_error(404)
                    return
                body = outer.content.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # requests are not news

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/{token}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _SecretServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
