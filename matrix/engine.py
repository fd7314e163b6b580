"""The Docker Engine, through the docker SDK. The only module that imports `docker`.

Everything the sweep needs from an engine is here as plain values (BuildResult, RunResult), so the
rest of the code never sees an SDK type, and a daemon failure arrives as EngineFault.

The SDK (with requests and urllib3) takes 0.13 s to import, half of what an unchanged re-run
costs. So on a local socket the few read-only questions such a run asks (the engine's version,
an image's id, what a host's runs left, a ping) go over it with the standard library, and the SDK
is imported when the first thing has to be done.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrix.errors import EngineUnavailable
from matrix.probing import RunResult

RUN_LABEL = "org.compat-matrix.run"
# The machine a run lives on: only there can its lock tell whether it is still alive.
HOST_LABEL = "org.compat-matrix.host"
# The classic builder colours a step's stderr; the classifier reads plain lines.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_LABEL = "org.compat-matrix.cell"


class EngineFault(Exception):
    """The daemon failed us (gone, refused, errored): the cell is an infra-error, not a verdict."""


@dataclass(frozen=True)
class BuildResult:
    ok: bool
    log: str
    error: str = ""


# Bound on first use of the SDK (_load_sdk): the module, and what its calls fail with.
docker: Any = None
requests: Any = None
_FAULTS: tuple[type[BaseException], ...] = ()


def _load_sdk() -> None:
    global docker, requests, _FAULTS
    if docker is None:
        import docker as sdk
        import docker.errors
        import requests.exceptions as requests_exceptions

        docker = sdk
        requests = requests_exceptions
        _FAULTS = (docker.errors.DockerException, requests.RequestException, ConnectionError)


class _Socket:
    """GET requests to the engine's unix socket with the standard library; any failure is an
    EngineFault."""

    def __init__(self, path: str) -> None:
        import http.client

        self.path = path
        self._http = http.client

        class Connection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(60)
                self.sock.connect(path)

        self._connection = Connection

    def get(self, url: str, **query: str) -> tuple[int, Any]:
        conn = self._connection("localhost", timeout=60)
        try:
            conn.request("GET", url + ("?" + urllib.parse.urlencode(query) if query else ""))
            response = conn.getresponse()
            body = response.read()
            if response.status >= 500:
                raise EngineFault(f"the engine answered {response.status} to GET {url}: {body[:300]!r}")
            is_json = response.getheader("Content-Type", "").startswith("application/json")
            return response.status, json.loads(body) if is_json else body
        except (OSError, ValueError, self._http.HTTPException) as e:
            raise EngineFault(f"GET {url} on {self.path}: {_short(e)}") from e
        finally:
            conn.close()


class DockerEngine:
    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self.host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        hint = "start dockerd, or set DOCKER_HOST to a reachable engine"
        self._client = client
        self._lock = threading.Lock()
        self._socket: _Socket | None = None
        if client is None and self.host.startswith("unix://"):
            path = self.host[len("unix://"):]
            if not Path(path).exists():
                # Checked first: the SDK leaks a socket when it connects to a missing path.
                raise EngineUnavailable(f"no Docker Engine answered: no socket at {self.host}; {hint}")
            self._socket = _Socket(path)
        try:
            version = self._socket.get("/version")[1] if self._socket else self.client.version()
        except (EngineFault, *_FAULTS) as e:
            self.close()
            raise EngineUnavailable(f"no Docker Engine answered at {self.host} ({_short(e)}); {hint}") from None
        # The SDK's name for a local socket, so records say the same whoever asked.
        where = "http+docker://localhost" if self._socket else self.client.api.base_url
        self.description = f"docker {version.get('Version', '?')} ({where})"

    @property
    def client(self) -> docker.DockerClient:
        """The SDK's client, made on first use."""
        with self._lock:
            _load_sdk()  # also for a client handed in: the SDK's errors are what its calls raise
            if self._client is None:
                try:
                    self._client = docker.from_env(timeout=600)
                except _FAULTS as e:
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
        except (EngineFault, *_FAULTS):
            return False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

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
        except docker.errors.ImageNotFound:
            return None
        except _FAULTS as e:
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
        except _FAULTS as e:
            return f"base image {ref} is not on the engine and could not be pulled: {_short(e)}"

    def build(self, context_dir: Path, tag: str) -> BuildResult:
        log: list[str] = []
        error = ""
        try:
            stream = self.client.api.build(
                path=str(context_dir), tag=tag, rm=True, forcerm=True, pull=False,
                network_mode="host", decode=True,
            )
            for chunk in stream:
                if "stream" in chunk:
                    log.append(_ANSI.sub("", str(chunk["stream"])))
                elif "error" in chunk:
                    error = str(chunk["error"]).strip()
                    log.append(error + "\n")
                elif "status" in chunk:
                    log.append(str(chunk["status"]) + "\n")
        except _FAULTS as e:
            raise EngineFault(f"build of {tag} failed in the engine: {_short(e)}") from e
        return BuildResult(ok=not error, log="".join(log), error=error)

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            try:
                self.client.volumes.create(name, labels=labels)
            except docker.errors.APIError as e:
                if e.status_code != 409:  # created by a concurrent run meanwhile: fine
                    raise EngineFault(f"creating volume {name}: {_short(e)}") from e
        except _FAULTS as e:
            raise EngineFault(f"creating volume {name}: {_short(e)}") from e

    def start(self, image: str, command: list[str], *, labels: dict[str, str], volumes: dict[str, str]) -> str:
        """Start a long-lived container with host networking (the cells' installs run in it);
        `volumes` maps volume name → mount point. Returns its id."""
        try:
            container = self.client.containers.run(
                image, command=command, labels=labels, network_mode="host", detach=True, user="0:0",
                volumes={name: {"bind": path, "mode": "rw"} for name, path in volumes.items()},
            )
            return str(container.id)
        except _FAULTS as e:
            raise EngineFault(f"starting a container from {image}: {_short(e)}") from e

    def running(self, container: str) -> tuple[bool, str]:
        """Whether a container is up, and its output if not."""
        try:
            c = self.client.containers.get(container)
            if c.status == "running":
                return True, ""
            return False, c.logs().decode("utf-8", "replace")
        except _FAULTS as e:
            raise EngineFault(f"inspecting container {container[:12]}: {_short(e)}") from e

    def put_files(self, container: str, files: dict[str, Path | bytes], mode: int = 0o644) -> None:
        """Copy files (absolute path in the container → a file here, or bytes) into a container."""
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
        except _FAULTS as e:
            raise EngineFault(f"copying files into {container[:12]}: {_short(e)}") from e

    def exec(self, container: str, command: list[str], environment: dict[str, str] | None = None) -> RunResult:
        """Run a command in a running container; its output and exit code."""
        api = self.client.api
        try:
            exec_id = api.exec_create(container, command, environment=environment or {})["Id"]
            out, err = api.exec_start(exec_id, demux=True)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except _FAULTS as e:
            raise EngineFault(f"running {command[0]} in {container[:12]}: {_short(e)}") from e
        return RunResult(code, (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace"))

    def remove_cache(self, run_id: str) -> int:
        """Remove the images and volumes labelled with `run_id` (the caches that outlive runs)."""
        filters = {"label": f"{RUN_LABEL}={run_id}"}
        removed = self.remove_labelled(run_id)
        try:
            for v in self.client.api.volumes(filters=filters).get("Volumes") or []:
                removed += self._gone(self.client.api.remove_volume, v["Name"], force=True)
        except _FAULTS as e:
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
    ) -> RunResult:
        """Run a command with no network and a memory limit; the container is always removed.
        `volumes` (name → mount point) are mounted read-only."""
        try:
            container = self.client.containers.create(
                image, command=command, environment=environment, labels=labels,
                volumes={name: {"bind": path, "mode": "ro"} for name, path in (volumes or {}).items()},
                network_mode="none", mem_limit=memory, memswap_limit=memory, pids_limit=512,
                cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
                tmpfs={"/tmp": "rw,size=512m"}, user="65534:65534", detach=True,
            )
        except _FAULTS as e:
            raise EngineFault(f"creating a container from {image}: {_short(e)}") from e
        try:
            container.start()
            timed_out = False
            exit_code: int | None = None
            try:
                exit_code = int(container.wait(timeout=timeout_s)["StatusCode"])
            except (requests.ReadTimeout, requests.ConnectionError):
                timed_out = True
                container.kill()
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            return RunResult(exit_code, stdout, stderr, timed_out=timed_out, oom_killed=oom)
        except _FAULTS as e:
            raise EngineFault(f"running {image}: {_short(e)}") from e
        finally:
            try:
                container.remove(force=True)
            except _FAULTS:
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
        except _FAULTS as e:
            raise EngineFault(f"listing {kind}: {_short(e)}") from e

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
                for c in self._objects("containers", filters):
                    found += 1
                    removed += self._gone(self.client.api.remove_container, c["Id"], force=True, v=True)
                for image in self._objects("images", filters):
                    found += 1
                    removed += self._gone(self.client.api.remove_image, image["Id"], force=True)
                if found:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= settle_s:
                    break
                else:
                    time.sleep(1.0)
        except _FAULTS as e:
            raise EngineFault(f"cleaning up run {run_id}: {_short(e)}") from e
        return removed

    @staticmethod
    def _gone(remove: Callable[..., object], *args: object, **kwargs: object) -> int:
        """1 when removed; 0 when already gone or still needed by a child (next pass gets it)."""
        try:
            remove(*args, **kwargs)
            return 1
        except docker.errors.NotFound:
            return 0
        except docker.errors.APIError as e:
            if e.status_code == 409:
                return 0
            raise


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__
