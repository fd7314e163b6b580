"""The Docker Engine, through the docker SDK. The only module that imports `docker`.

Everything the sweep needs from an engine is here as plain values (BuildResult, RunResult), so the
rest of the code never sees an SDK type, and a daemon failure arrives as EngineFault.

The SDK (with requests and urllib3) takes 0.13 s to import, half of what an unchanged re-run
costs. So on a local socket the few read-only questions such a run asks (the engine's version,
an image's id, what a host's runs left, a ping) go over it with the standard library, and the SDK
is imported when the first thing has to be done.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from matrix import gpus as gpu_requests
from matrix.backends.agent import Agent, AgentCouldNotStart, AgentLost
from matrix.errors import EngineUnavailable
from matrix.probing import RunResult

if TYPE_CHECKING:
    from docker import DockerClient

RUN_LABEL = "org.compat-matrix.run"
# The machine a run lives on (for a look; whether the run is alive is read on the engine: ROLE_LABEL).
HOST_LABEL = "org.compat-matrix.host"
# What a run's container is for. A run's workbench lives exactly as long as the run's process
# (start(): its idle command reads stdin, which this process holds), so a run is alive while one
# of its workbenches runs, whoever asks, from whatever state directory, host or user.
ROLE_LABEL = "org.compat-matrix.role"
WORKBENCH = "workbench"
PROBE = "probe"
# The images of `compat-matrix check` (it runs no workbench): a check is taken to be alive while
# one of its images is younger than _CHECK_ALIVE_S, so a concurrent run never reaps them mid-check.
CHECK = "check"
_CHECK_ALIVE_S = 6 * 3600.0
# How long the shared client waits on a silent answer (an exec's output, say), and a workbench's agent on
# its answer to a command.
_SILENCE_S = 600.0
# A workbench created but not yet started (a few milliseconds of a live run) counts as alive this long.
_STARTING_S = 600.0
# The classic builder colours a step's stderr; the classifier reads plain lines.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_LABEL = "org.compat-matrix.cell"


class EngineFault(Exception):
    """The daemon failed us (gone, refused, errored): the cell is an infra-error, not a verdict."""


class AgentGone(EngineFault):
    """A container's agent did not answer as asked: nothing more can be run in that container."""


@dataclass(frozen=True)
class BuildResult:
    ok: bool
    log: str
    error: str = ""


@dataclass(frozen=True)
class ContainerState:
    """How a container is, as the engine says: running, or how it ended and what it printed."""

    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""  # the engine's own word on why it ended (a start that failed)
    logs: str = ""

    def describe(self) -> str:
        if self.running:
            return "running"
        how = [f"exit code {self.exit_code}"]
        if self.exit_code is not None and 128 < self.exit_code <= 192:
            how.append(f"killed by {_signal_name(self.exit_code - 128)}")
        if self.oom_killed:
            how.append("out of memory")
        if self.error:
            how.append(self.error)
        last = [ln.strip() for ln in self.logs.splitlines() if ln.strip()]
        return ", ".join(how) + (f"; last output: {last[-1][:200]}" if last else "")


# Whom the probes run as: nobody, never root.
SANDBOX_USER = "65534:65534"


@dataclass(frozen=True)
class Sandbox:
    """The locked-down container the probes run in (run()'s one-shot containers and start()'s
    probers alike): no network, a read-only root with a scratch /tmp, no capabilities and no
    new privileges, memory (swap included) and pids limits, the volumes read-only, and the
    GPUs a base asks for (matrix.gpus' form)."""

    memory: str
    gpus: str | None = None

    def settings(self) -> dict[str, Any]:
        """The engine's host settings for it (volumes aside), by the names both the SDK's
        containers.create and its create_host_config take."""
        return {"network_mode": "none", "mem_limit": self.memory, "memswap_limit": self.memory, "pids_limit": 512,
                "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"], "read_only": True,
                "tmpfs": {"/tmp": "rw,size=512m"},
                **({"device_requests": device_requests(self.gpus)} if self.gpus else {})}

    @staticmethod
    def binds(volumes: dict[str, str]) -> dict[str, dict[str, str]]:
        """Volumes (name → mount point), read-only."""
        return {name: {"bind": path, "mode": "ro"} for name, path in volumes.items()}


def _signal_name(num: int) -> str:
    import signal

    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def killed_from_outside(exit_code: int | None, oom_killed: bool) -> bool:
    """A probe container that ended by SIGKILL or SIGTERM without its memory limit: the driver
    (PID 1, which runs package code only in subprocesses it reports on) never ends that way on
    its own; the engine stopping, `docker kill`/`stop` or the host's OOM killer did it."""
    return exit_code in (128 + 9, 128 + 15) and not oom_killed


def outran(started: float, now: float, timeout_s: float) -> bool:
    """Whether a wait that broke off at `now` had run its full `timeout_s`: only then is it the
    probe's timeout. A wait that broke off earlier (a dropped connection, an engine that went
    away) is the engine's fault, whatever the client library called it (on a unix socket the
    SDK reports its read timeout as a ConnectionError)."""
    return now - started >= timeout_s * 0.99


class _Sdk:
    """The docker SDK, imported on first use (0.13 s): the read-only questions of an unchanged re-run
    go over the socket with the standard library and never need it. One object, loaded once, instead
    of module globals rebound at run time."""

    @functools.cached_property
    def docker(self) -> Any:
        import docker

        return docker

    @functools.cached_property
    def errors(self) -> Any:
        import docker.errors

        return docker.errors

    @functools.cached_property
    def requests(self) -> Any:
        import requests.exceptions

        return requests.exceptions

    @functools.cached_property
    def faults(self) -> tuple[type[BaseException], ...]:
        """What the SDK's calls fail with when the engine or the connection to it fails."""
        return (self.errors.DockerException, self.requests.RequestException, ConnectionError)

    def faults_if_loaded(self, *more: type[BaseException]) -> tuple[type[BaseException], ...]:
        """`more` and the SDK's faults, without loading the SDK for them (a caller that may not
        have used it)."""
        return more + (self.faults if "docker" in self.__dict__ else ())


_sdk = _Sdk()


class _Socket:
    """GET requests to the engine's unix socket, in HTTP/1.0 by hand: the engine answers each
    whole, without chunks, and closes (the standard library's http.client, with the ssl and email
    modules it loads, was 13 ms of an unchanged re-run's 0.12 s). Any failure, and any answer that
    is not HTTP or larger than _MAX_ANSWER, is an EngineFault."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get(self, url: str, **query: str) -> tuple[int, Any]:
        target = url + ("?" + urllib.parse.urlencode(query) if query else "")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(60)
                sock.connect(self.path)
                sock.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode("ascii"))
                answer = bytearray()
                while chunk := sock.recv(1 << 16):
                    answer += chunk
                    if len(answer) > _MAX_ANSWER:
                        raise ValueError(f"an answer of more than {_MAX_ANSWER} bytes")
            status, headers, body = _http_answer(bytes(answer))
            if status >= 500:
                raise EngineFault(f"the engine answered {status} to GET {url}: {body[:300]!r}")
            is_json = headers.get("content-type", "").startswith("application/json")
            return status, json.loads(body) if is_json else body
        except (OSError, ValueError) as e:
            raise EngineFault(f"GET {url} on {self.path}: {_short(e)}") from e


_MAX_ANSWER = 64 << 20


def _http_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """An HTTP/1.x answer read to its end: status, headers (names in lower case) and body. A
    ValueError when it is not one (or it is cut short of its Content-Length, or chunked)."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        raise ValueError(f"not an HTTP answer: {answer[:80]!r}")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    status = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or len(status) != 3 or not status.isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"not an HTTP header: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("a chunked answer to an HTTP/1.0 request")
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit() or len(body) < int(length):
            raise ValueError(f"an answer cut short: {len(body)} of {length} bytes")
        body = body[:int(length)]
    return int(status), headers, body


class DockerEngine:
    def __init__(self, client: DockerClient | None = None) -> None:
        self.host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        hint = "start dockerd, or set DOCKER_HOST to a reachable engine"
        self._client = client
        self._lock = threading.Lock()
        self._held: dict[str, Any] = {}  # container → the stdin this process holds (start())
        self._agents: dict[str, Agent] = {}  # container → its agent, when start() was asked for one
        self._patient_clients: dict[int, DockerClient] = {}  # _patient(): their read timeout → client
        self._socket: _Socket | None = None
        if client is None and self.host.startswith("unix://"):
            path = self.host[len("unix://"):]
            if not Path(path).exists():
                # Checked first: the SDK leaks a socket when it connects to a missing path.
                raise EngineUnavailable(f"no Docker Engine answered: no socket at {self.host}; {hint}")
            self._socket = _Socket(path)
        try:
            version = self._socket.get("/version")[1] if self._socket else self.client.version()
        except _sdk.faults_if_loaded(EngineFault) as e:
            self.close()
            raise EngineUnavailable(f"no Docker Engine answered at {self.host} ({_short(e)}); {hint}") from None
        # The SDK's name for a local socket, so records say the same whoever asked.
        where = "http+docker://localhost" if self._socket else self.client.api.base_url
        self.description = f"docker {version.get('Version', '?')} ({where})"

    @property
    def client(self) -> DockerClient:
        """The SDK's client, made on first use."""
        with self._lock:
            _ = _sdk.faults  # loaded also for a client handed in: the SDK's errors are what its calls raise
            if self._client is None:
                try:
                    self._client = _sdk.docker.from_env(timeout=int(_SILENCE_S))
                except _sdk.faults as e:
                    raise EngineFault(f"connecting to the engine at {self.host}: {_short(e)}") from e
            return self._client

    def connect(self) -> None:
        """Load the SDK and make its client now (it is made on first use otherwise)."""
        self.client  # noqa: B018 - the property does it

    def alive(self) -> bool:
        try:
            if self._socket:
                return self._socket.get("/_ping")[0] == 200
            return bool(self.client.ping())
        except _sdk.faults_if_loaded(EngineFault):
            return False

    def close(self) -> None:
        for container in list(self._held):
            self.release(container)
        if self._client is not None:
            self._client.close()
        for patient in self._patient_clients.values():
            patient.close()

    def image_id(self, ref: str) -> str | None:
        if self._socket:
            status, found = self._socket.get(f"/images/{urllib.parse.quote(ref, safe='')}/json")
            if status == 404:
                return None
            if status != 200 or not isinstance(found, dict):
                raise EngineFault(f"inspecting {ref}: the engine answered {status}")
            return str(found["Id"])
        try:
            return str(self.client.images.get(ref).id)
        except _sdk.errors.ImageNotFound:
            return None
        except _sdk.faults as e:
            raise EngineFault(f"inspecting {ref}: {e}") from e

    def has_image(self, ref: str) -> bool:
        return self.image_id(ref) is not None

    def ensure_image(self, ref: str) -> str | None:
        """Make a base image available; None when it is, else why it is not."""
        if self.has_image(ref):
            return None
        try:
            self.client.images.pull(ref)
            return None
        except _sdk.faults as e:
            return f"base image {ref} is not on the engine and could not be pulled: {_short(e)}"

    def build(self, context_dir: Path, tag: str) -> BuildResult:
        return self._build(tag, path=str(context_dir))

    def build_context(self, context: IO[bytes], tag: str, *, dockerfile: str,
                      build_args: dict[str, str] | None = None) -> BuildResult:
        """Build from a tar of the context (a user's directory, with the Dockerfile to build as
        `dockerfile` inside it), `build_args` passed through as --build-arg does."""
        return self._build(tag, fileobj=context, custom_context=True, dockerfile=dockerfile,
                           buildargs=dict(build_args or {}))

    def _build(self, tag: str, **source: Any) -> BuildResult:
        log: list[str] = []
        error = ""
        try:
            stream = self.client.api.build(
                tag=tag, rm=True, forcerm=True, pull=False, network_mode="host", decode=True, **source,
            )
            for chunk in stream:
                if "stream" in chunk:
                    log.append(_ANSI.sub("", str(chunk["stream"])))
                elif "error" in chunk:
                    error = str(chunk["error"]).strip()
                    log.append(error + "\n")
                elif "status" in chunk:
                    log.append(str(chunk["status"]) + "\n")
        except _sdk.faults as e:
            raise EngineFault(f"build of {tag} failed in the engine: {_short(e)}") from e
        return BuildResult(ok=not error, log="".join(log), error=error)

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        try:
            self.client.volumes.get(name)
        except _sdk.errors.NotFound:
            try:
                self.client.volumes.create(name, labels=labels)
            except _sdk.errors.APIError as e:
                if e.status_code != 409:  # created by a concurrent run meanwhile: fine
                    raise EngineFault(f"creating volume {name}: {_short(e)}") from e
        except _sdk.faults as e:
            raise EngineFault(f"creating volume {name}: {_short(e)}") from e

    def start(self, image: str, command: list[str], *, labels: dict[str, str], volumes: dict[str, str],
              sandbox: Sandbox | None = None, agent: bool = False) -> str:
        """Start a long-lived container running `command` (in place of the image's entrypoint);
        `volumes` maps volume name → mount point. Returns its id.

        Without `sandbox`: a workbench, with host networking, as root, the volumes writable (the
        cells' installs run in it). With it: a prober, locked down as run()'s containers are (no
        network, read-only root, no capabilities, its memory and pids limits, the volumes
        read-only), with the engine's init as PID 1 to reap what the commands exec'd into it leave
        behind; what runs in it is exec'd as SANDBOX_USER.

        Its stdin is this process's for as long as it lives (attached, and closed by the engine
        when this process's connection goes: StdinOnce): a `command` that reads stdin to its end
        ends with this process, however this process ends (SIGKILL too), so a workbench running
        is the proof that its run is alive (live_runs).

        `agent`: `command` is a workbench's agent (probes/_workbench.py), which exec() then hands
        the container's commands to instead of the engine (its output is attached too)."""
        api = self.client.api
        try:
            if sandbox is None:
                host_config = api.create_host_config(
                    network_mode="host", binds={name: {"bind": path, "mode": "rw"} for name, path in volumes.items()})
            else:
                # Its init and idle command run as root (with no capability: they cannot do more
                # than nobody), so the cells' processes, exec'd as nobody, cannot stop them.
                host_config = api.create_host_config(init=True, binds=sandbox.binds(volumes), **sandbox.settings())
            created = api.create_container(
                image, entrypoint=command, command=[], labels=labels, user="0:0", stdin_open=True, detach=False,
                volumes=list(volumes.values()), host_config=host_config)
        except _sdk.faults as e:
            raise EngineFault(f"creating a container from {image}: {_short(e)}") from e
        cid = str(created["Id"])
        try:
            params = {"stdin": 1, "stream": 1, **({"stdout": 1, "stderr": 1} if agent else {})}
            held = api.attach_socket(cid, params=params)
            with self._lock:
                self._held[cid] = held
                if agent:
                    self._agents[cid] = Agent(_raw(held), silence_s=_SILENCE_S)
            api.start(cid)
            return cid
        except _sdk.faults as e:
            self.remove(cid)
            if sandbox is not None and sandbox.gpus and gpu_requests.engine_has_no_gpu(str(e)):
                raise EngineFault(f"{gpu_requests.NO_GPU} (the engine: {_short(e)})") from e
            raise EngineFault(f"starting a container from {image}: {_short(e)}") from e

    def remove(self, container: str) -> None:
        """Let go of a container start() made and remove it, whatever it is doing (a fault is left
        to remove_labelled() at the end of the run)."""
        self.release(container)
        try:
            self.client.api.remove_container(container, force=True)
        except _sdk.faults:
            pass

    def release(self, container: str) -> None:
        """Let go of a container start() holds: its idle command reads the end of its stdin."""
        with self._lock:
            held = self._held.pop(container, None)
            self._agents.pop(container, None)
        if held is not None:
            raw = _raw(held)
            held.close()
            if raw is not held:
                raw.close()  # SocketIO.close() leaves the socket itself open

    def state(self, container: str) -> ContainerState:
        """Whether a container is up; if not, how it ended and what it printed."""
        try:
            c = self.client.containers.get(container)
            st = c.attrs.get("State") or {}
            if c.status == "running":
                return ContainerState(True)
            return ContainerState(False, st.get("ExitCode"), bool(st.get("OOMKilled")), str(st.get("Error") or ""),
                                  c.logs().decode("utf-8", "replace"))
        except _sdk.faults as e:
            raise EngineFault(f"inspecting container {container[:12]}: {_short(e)}") from e

    def stopped(self, container: str, timeout_s: float) -> ContainerState:
        """The container's state once it has stopped, or (running) when it has not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state(container)
            if not state.running or time.monotonic() >= deadline:
                return state
            time.sleep(0.05)

    def put_files(self, container: str, files: dict[str, Path | bytes], mode: int = 0o644) -> None:
        """Copy files (absolute path in the container → a file here, or bytes) into a container."""
        import tarfile  # here: a run whose verdicts are all kept (a re-run) is through before it is needed

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path, source in sorted(files.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.mode = mode
                if isinstance(source, bytes):
                    info.size = len(source)
                    tar.addfile(info, io.BytesIO(source))
                else:
                    info.size = source.stat().st_size
                    with open(source, "rb") as f:
                        tar.addfile(info, f)
        try:
            self.client.api.put_archive(container, "/", buf.getvalue())
        except _sdk.faults as e:
            raise EngineFault(f"copying files into {container[:12]}: {_short(e)}") from e

    def exec(self, container: str, command: list[str], environment: dict[str, str] | None = None, *,
             user: str | None = None, timeout_s: float | None = None,
             on_timeout: Callable[[], object] | None = None, what: str = "") -> RunResult:
        """Run a command in a running container (as `user`, else the container's); its output and
        exit code. `what` names the command in a fault's message (else its program does).

        With `timeout_s`: once that has passed, `on_timeout` is called (from another thread: it
        stops the command, an exec of its own; it has returned when this does) and the result says
        timed_out when the command then ended other than in order. Its output is read by a client
        that waits that long (the shared one gives up after 600 s of silence).

        In a container start() gave an agent, a command without `user` or `timeout_s` is the
        agent's to run (no exec), and a lost agent is AgentGone (an EngineFault, as an exec's fault
        is, after which the container runs nothing more)."""
        agent = self._agents.get(container) if user is None and timeout_s is None else None
        if agent is not None:
            try:
                code, out, err = agent.call(command, environment or {})
            except AgentLost as e:
                raise AgentGone(f"running {what or command[0]} in {container[:12]}: {e}") from e
            except AgentCouldNotStart as e:
                raise EngineFault(f"running {what or command[0]} in {container[:12]}: the workbench's agent "
                                  f"could not start it: {str(e)[:300]}") from e
            return RunResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        api = self.client.api
        timer: threading.Timer | None = None
        fired = threading.Event()
        started = time.monotonic()
        try:
            exec_id = api.exec_create(container, command, environment=environment or {}, user=user or "")["Id"]
            if timeout_s is not None and on_timeout is not None:
                def stop() -> None:
                    fired.set()
                    on_timeout()

                timer = threading.Timer(timeout_s, stop)
                timer.daemon = True
                timer.start()
            reader = api if timeout_s is None else self._patient(timeout_s)
            out, err = reader.exec_start(exec_id, demux=True)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except _sdk.faults as e:
            dropped = isinstance(e, _sdk.requests.ConnectionError)
            how = f"the engine dropped the connection after {time.monotonic() - started:.0f} s: " if dropped else ""
            raise EngineFault(f"running {what or command[0]} in {container[:12]}: {how}{_short(e)}") from e
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()  # a stop under way ends before the caller goes on (its own clean-up, say)
        stdout, stderr = (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace")
        fault = exec_fault(code, stdout + stderr)
        if fault:
            raise EngineFault(f"running {what or command[0]} in {container[:12]}: {fault}")
        return RunResult(code, stdout, stderr, timed_out=fired.is_set() and code != 0)

    def _patient(self, timeout_s: float) -> Any:
        """A second client for commands that may say nothing for `timeout_s` (a probe run): it waits
        a minute longer than that before it calls the silence a fault. One per limit, made once."""
        wait = int(timeout_s) + 60
        with self._lock:
            if wait not in self._patient_clients:
                try:
                    self._patient_clients[wait] = _sdk.docker.from_env(timeout=wait)
                except _sdk.faults as e:
                    raise EngineFault(f"connecting to the engine at {self.host}: {_short(e)}") from e
            return self._patient_clients[wait].api

    def remove_cache(self, run_id: str) -> int:
        """Remove the images and volumes labelled with `run_id` (the caches that outlive runs)."""
        filters = {"label": f"{RUN_LABEL}={run_id}"}
        removed = self.remove_labelled(run_id)
        try:
            for v in self.client.api.volumes(filters=filters).get("Volumes") or []:
                removed += self._gone(self.client.api.remove_volume, v["Name"], force=True)
        except _sdk.faults as e:
            raise EngineFault(f"removing the cache volumes: {_short(e)}") from e
        return removed

    def run(
        self,
        image: str,
        command: list[str],
        *,
        environment: dict[str, str],
        labels: dict[str, str],
        memory: str,
        timeout_s: float,
        volumes: dict[str, str] | None = None,
        entrypoint: list[str] | None = None,
        gpus: str | None = None,
    ) -> RunResult:
        """Run a command with no network and a memory limit; the container is always removed.
        `volumes` (name → mount point) are mounted read-only; `entrypoint` replaces the image's
        (a user's image may have one); `gpus` (matrix.gpus' form) are requested as `--gpus` does,
        and an engine that cannot give them is an EngineFault saying gpus.NO_GPU."""
        try:
            container = self.client.containers.create(
                image, command=command, environment=environment, labels=labels,
                **({"entrypoint": entrypoint} if entrypoint is not None else {}),
                volumes=Sandbox.binds(volumes or {}), **Sandbox(memory, gpus).settings(), user=SANDBOX_USER,
                detach=True,
            )
        except _sdk.faults as e:
            raise EngineFault(f"creating a container from {image}: {_short(e)}") from e
        try:
            try:
                container.start()
            except _sdk.faults as e:
                if gpus and gpu_requests.engine_has_no_gpu(str(e)):
                    raise EngineFault(f"{gpu_requests.NO_GPU} (the engine: {_short(e)})") from e
                raise
            timed_out = False
            exit_code: int | None = None
            started = time.monotonic()
            try:
                waited = container.wait(timeout=timeout_s)
            except (_sdk.requests.ReadTimeout, _sdk.requests.ConnectionError) as e:
                # Only the clock makes a timeout: a wait that broke off early is the engine's fault.
                if not outran(started, time.monotonic(), timeout_s):
                    raise EngineFault(f"waiting for the probe container of {image}: the engine dropped the "
                                      f"connection after {time.monotonic() - started:.0f} s: {_short(e)}") from e
                timed_out = True
                container.kill()
            else:
                error = (waited.get("Error") or {}).get("Message")
                if error or waited.get("StatusCode") is None:
                    raise EngineFault(f"waiting for the probe container of {image}: {error or waited!r}")
                exit_code = int(waited["StatusCode"])
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            if not timed_out and killed_from_outside(exit_code, oom):
                raise EngineFault(f"the probe container of {image} was stopped from outside (exit code {exit_code}, "
                                  "not its memory limit): the engine stopping, `docker kill`, the host's OOM killer")
            return RunResult(exit_code, stdout, stderr, timed_out=timed_out, oom_killed=oom)
        except _sdk.faults as e:
            raise EngineFault(f"running {image}: {_short(e)}") from e
        finally:
            try:
                container.remove(force=True)
            except _sdk.faults:
                pass  # remove_labelled() catches it at the end of the run

    def _objects(self, kind: str, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        """The containers or images (all of them, running or not, untagged too) that match."""
        if self._socket:
            status, found = self._socket.get(f"/{kind}/json", all="1", filters=json.dumps(filters))
            if status != 200 or not isinstance(found, list):
                raise EngineFault(f"listing {kind}: the engine answered {status}")
            return found
        try:
            listing = self.client.api.containers if kind == "containers" else self.client.api.images
            return list(listing(all=True, filters=filters))
        except _sdk.faults as e:
            raise EngineFault(f"listing {kind}: {_short(e)}") from e

    def live_runs(self) -> dict[str, bool]:
        """Every run that owns containers or images on this engine (the caches aside), and whether
        it is alive: one of its workbenches runs (start() ties a workbench's life to its run's
        process), or was created moments ago and is being started. Read here, where the objects
        are, it holds for runs of any state directory, user or host sharing the engine. A running
        container of a run that labels no role (made by an older version) counts as alive:
        whether it is cannot be told, and a live run's objects must never go."""
        return liveness(self._objects("containers", {"label": [RUN_LABEL]}),
                        self._objects("images", {"label": [RUN_LABEL]}), time.time())

    def runs_of_host(self, host: str) -> set[str]:
        """The run ids that own containers or images made from this host."""
        filters = {"label": [f"{HOST_LABEL}={host}"]}
        objects = self._objects("containers", filters) + self._objects("images", filters)
        return {o["Labels"][RUN_LABEL] for o in objects if RUN_LABEL in (o.get("Labels") or {})}

    def remove_labelled(self, run_id: str, cell: str | None = None, *, settle_s: float = 0.0) -> int:
        """Remove every container and image of a run (or of one cell of it). Returns how many.

        Sweeps until a pass finds nothing: a failed build leaves a chain of untagged layers whose
        children must go before their parents. After an interrupt the daemon goes on with the
        build step under way and commits it after the client has gone, so `settle_s` keeps
        sweeping, a second apart, until that long has passed with nothing found.
        """
        filters = {"label": [f"{RUN_LABEL}={run_id}"] + ([f"{CELL_LABEL}={cell}"] if cell else [])}
        removed = 0
        quiet_since = time.monotonic()
        try:
            for _ in range(10 + int(settle_s) * 4):
                found = 0
                containers = self._objects("containers", filters)
                found += len(containers)
                if containers:  # side by side: a run's workbenches and probers go in the time of one (0.05 s each)
                    from concurrent.futures import ThreadPoolExecutor  # (5 ms, on no re-run's way)

                    with ThreadPoolExecutor(max_workers=min(len(containers), 8)) as pool:
                        removed += sum(pool.map(lambda c: self._gone(self.client.api.remove_container, c["Id"],
                                                                     force=True, v=True), containers))
                for image in self._objects("images", filters):
                    found += 1
                    removed += self._gone(self.client.api.remove_image, image["Id"], force=True)
                if found:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= settle_s:
                    break
                else:
                    time.sleep(1.0)
        except _sdk.faults as e:
            raise EngineFault(f"cleaning up run {run_id}: {_short(e)}") from e
        return removed

    @staticmethod
    def _gone(remove: Callable[..., object], *args: object, **kwargs: object) -> int:
        """1 when removed; 0 when already gone or still needed by a child (next pass gets it)."""
        try:
            remove(*args, **kwargs)
            return 1
        except _sdk.errors.NotFound:
            return 0
        except _sdk.errors.APIError as e:
            if e.status_code == 409:
                return 0
            raise


def liveness(containers: list[dict[str, Any]], images: list[dict[str, Any]], now: float) -> dict[str, bool]:
    """live_runs() from the engine's listings (GET /containers/json, /images/json)."""
    runs: dict[str, bool] = {}
    for c in containers:
        labels = c.get("Labels") or {}
        run = labels.get(RUN_LABEL, "")
        if not run or run == "cache":
            continue
        role = labels.get(ROLE_LABEL)
        state = c.get("State", "")
        alive = (state in ("running", "restarting", "paused") and role in (WORKBENCH, None)) or (
            state == "created" and role == WORKBENCH and now - float(c.get("Created") or 0) < _STARTING_S)
        runs[run] = runs.get(run, False) or alive
    for image in images:
        labels = image.get("Labels") or {}
        run = labels.get(RUN_LABEL, "")
        if run and run != "cache":
            young = labels.get(ROLE_LABEL) == CHECK and now - float(image.get("Created") or 0) < _CHECK_ALIVE_S
            runs[run] = runs.get(run, False) or young
    return runs


# What the container runtime prints (as the exec's output, exit code 126/127) when it could not
# start the command at all: no word from the command, the tool's world.
_RUNTIME_FAILED = re.compile(r"^(?:OCI runtime exec failed|rpc error: code = )", re.MULTILINE)


def exec_fault(exit_code: int | None, output: str) -> str | None:
    """Why an exec's result is the engine's rather than its command's, if it is: no exit code
    (the engine lost track of the process), or the runtime's own report of a failed start."""
    if exit_code is None:
        return "the engine did not say how the command ended (no exit code)"
    if exit_code in (126, 127) and _RUNTIME_FAILED.search(output):
        return output.strip().splitlines()[0][:300]
    return None


def device_requests(gpus: str) -> list[Any]:
    """The SDK's device requests for a base's `gpus:` (docker run --gpus all: driver nvidia, count
    -1, capabilities [["gpu"]])."""
    return [_sdk.docker.types.DeviceRequest(**gpu_requests.device_request(gpus))]


def _raw(held: Any) -> socket.socket:
    """The socket under what the SDK's attach_socket() returns (a SocketIO on a unix socket, or the
    socket itself over TCP)."""
    return held._sock if hasattr(held, "_sock") else held  # the SDK gives no other way


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__
