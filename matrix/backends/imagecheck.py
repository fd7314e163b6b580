"""A user's own image, as it is, on the engine: built from its Dockerfile (`compat-matrix check`),
its installed distributions read after each installing RUN step, and the probes run inside it.

Nothing here changes the user's image: the probes go into a derived image (the user's image plus
one COPY layer), and every image a check builds (the user's Dockerfile too: a LABEL line is added
after each FROM, so the intermediate layers of a build that fails half-way carry it as well)
carries `org.compat-matrix.run=<run id>`, removed by that label when the check ends unless --keep.
Inventories and probes run in the sweep's locked-down probe container (no network, read-only
root, no capabilities, nobody's uid, a memory limit), with the image's ENTRYPOINT replaced.

Receives an engine object (engine.DockerEngine) and never imports docker.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from matrix import probing
from matrix.backends import dockerfile as layout
from matrix.backends.engine import CHECK, PROBE, ROLE_LABEL, RUN_LABEL, BuildResult, EngineFault
from matrix.classify import Verdict, classify_install
from matrix.errors import redact
from matrix.probing import RunResult
from matrix.store import Outcome

# The Dockerfile a check builds, beside the user's in the context tar: theirs plus LABEL lines.
LABELLED_DOCKERFILE = ".compat-matrix-check.Dockerfile"
# Interpreters looked for in an image, in this order, when it does not say.
PYTHONS = ("python3", "python")
# The engine's words when a container's command is not in the image.
_NOT_FOUND = re.compile(r"executable file not found|no such file or directory", re.IGNORECASE)
_STEP = re.compile(r"^Step (\d+)/\d+ : ")
_LAYER = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$")
_STEP_FAILED = re.compile(r"The command '(?P<command>.*)' returned a non-zero code: (?P<code>-?\d+)", re.DOTALL)
# A FROM the engine could not get (no registry reachable, a typo in a private name): not the image's verdict.
_PULL = re.compile(r"pull access denied|manifest unknown|not found: manifest|dial tcp|TLS handshake|"
                   r"i/o timeout|connection refused|Get \"?https?://", re.IGNORECASE)

# Prints the interpreter and every installed distribution (importlib.metadata: no pip needed, a
# distro Python under PEP 668 too), with what each requires. Python 3.8+ (older: the importlib_metadata
# backport, else pkg_resources); standard library only.
INVENTORY = r"""
import json, sys
try:
    from importlib import metadata
except ImportError:
    try:
        import importlib_metadata as metadata
    except ImportError:
        metadata = None
dists = {}
if metadata is not None:
    for d in metadata.distributions():
        try:
            name = d.metadata["Name"]
        except Exception:
            name = None
        if not name or name in dists:
            continue
        dists[name] = {"version": d.version, "requires": list(d.requires or [])}
else:
    try:
        import pkg_resources
        for d in pkg_resources.working_set:
            dists.setdefault(d.project_name, {"version": d.version, "requires": [str(r) for r in d.requires()]})
    except Exception:
        pass
print("COMPAT-MATRIX-INVENTORY " + json.dumps({
    "python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable, "dists": dists}))
"""
_INVENTORY_MARK = "COMPAT-MATRIX-INVENTORY "


class Builder(Protocol):
    """What building a user's Dockerfile asks of the engine (the docker backend's bases too)."""

    def image_id(self, ref: str) -> str | None: ...
    def build_context(self, context: IO[bytes], tag: str, *, dockerfile: str,
                      build_args: dict[str, str] | None = None) -> BuildResult: ...


class Engine(Protocol):
    def image_id(self, ref: str) -> str | None: ...
    def build(self, context_dir: Path, tag: str) -> BuildResult: ...
    def build_context(self, context: IO[bytes], tag: str, *, dockerfile: str,
                      build_args: dict[str, str] | None = None) -> BuildResult: ...
    def run(self, image: str, command: list[str], *, environment: dict[str, str], labels: dict[str, str],
            memory: str, timeout_s: float, volumes: dict[str, str] | None = None,
            entrypoint: list[str] | None = None) -> RunResult: ...
    def remove_labelled(self, run_id: str, cell: str | None = None, *, settle_s: float = 0.0) -> int: ...


class NoPython(Exception):
    """The image has no Python that runs (the message names the image)."""


@dataclass(frozen=True)
class Dist:
    version: str
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inventory:
    python: str
    executable: str
    dists: dict[str, Dist] = field(default_factory=dict)

    def versions(self) -> dict[str, str]:
        return {name: d.version for name, d in self.dists.items()}


@dataclass(frozen=True)
class Instruction:
    """One instruction of a Dockerfile: its first line, keyword and text (continuations joined)."""

    line: int
    keyword: str
    text: str


def instructions(text: str) -> list[Instruction]:
    """A Dockerfile's instructions with the line each starts on (comments and blank lines skipped,
    backslash continuations and heredocs followed)."""
    out: list[Instruction] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        start = i + 1
        i += 1
        if not raw or raw.startswith("#"):
            continue
        parts = [raw]
        while parts[-1].endswith("\\") and i < len(lines):
            nxt = lines[i].strip()
            i += 1
            if nxt.startswith("#"):
                continue
            parts[-1] = parts[-1][:-1].rstrip()
            parts.append(nxt)
        joined = " ".join(p for p in parts if p)
        heredoc = re.search(r"<<-?\s*[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?", joined)
        if heredoc and joined.split(None, 1)[0].upper() in ("RUN", "COPY", "ADD"):
            body = []
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            joined += "\n" + "\n".join(body)
        keyword = joined.split(None, 1)[0].upper()
        out.append(Instruction(start, keyword, joined))
    return out


def labelled(text: str, labels: dict[str, str]) -> tuple[str, list[Instruction | None]]:
    """The Dockerfile with a LABEL line after each FROM, and per build step (1-based, index 0
    unused) the user's instruction it is (None: one of ours)."""
    label = "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    lines: list[str] = []
    steps: list[Instruction | None] = [None]
    # Parser directives (# syntax=, # escape=) stay at the top: the text is kept as written, and
    # each LABEL goes in right after its FROM's last line.
    text_lines = text.splitlines()
    found = instructions(text)
    after: dict[int, str] = {}
    for ins in found:
        steps.append(ins)
        if ins.keyword == "FROM":
            steps.append(None)
            last = ins.line
            while last <= len(text_lines) and text_lines[last - 1].rstrip().endswith("\\"):
                last += 1
            after[last] = label
    for n, line in enumerate(text_lines, start=1):
        lines.append(line)
        if n in after:
            lines.append(after[n])
    return "\n".join(lines) + "\n", steps


@dataclass(frozen=True)
class Built:
    """A Dockerfile's build: whether it built, and per user instruction the image it left."""

    ok: bool
    log: str
    error: str
    image: str = ""  # the final image's id
    layers: tuple[tuple[Instruction, str], ...] = ()  # (instruction, the image after it)


def layers(log: str, steps: list[Instruction | None]) -> list[tuple[Instruction, str]]:
    """From the classic builder's log: the image after each step ("Step N/M : ..." then " ---> id")."""
    out: dict[int, str] = {}
    current = 0
    for line in log.splitlines():
        m = _STEP.match(line)
        if m:
            current = int(m.group(1))
            continue
        m = _LAYER.match(line)
        if m and current:
            out[current] = m.group(1)
    return [(ins, out[n]) for n, ins in enumerate(steps) if ins is not None and n in out]


def _context_tar(directory: Path, dockerfile_text: str, into: IO[bytes]) -> None:
    """The build context: the directory (as `docker build DIR` sends it, less what .dockerignore
    names by plain name) and the labelled Dockerfile."""
    ignored = set()
    ignore = directory / ".dockerignore"
    if ignore.is_file():
        ignored = {ln.strip().strip("/") for ln in ignore.read_text(encoding="utf-8", errors="replace").splitlines()
                   if ln.strip() and not ln.startswith("#") and not any(c in ln for c in "*?[!")}
    with tarfile.open(fileobj=into, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            if path.name in ignored or path.name == LABELLED_DOCKERFILE:
                continue
            tar.add(str(path), arcname=path.name)
        data = dockerfile_text.encode()
        info = tarfile.TarInfo(LABELLED_DOCKERFILE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    into.seek(0)


def build(engine: Builder, path: Path, text: str, tag: str, labels: dict[str, str],
          build_args: dict[str, str]) -> Built:
    """Build a user's Dockerfile (`text`, read from `path`) with its own directory as the context.
    A context that cannot be read (a file nobody may read, a special file) is the Dockerfile's
    failure, as `docker build` would have it."""
    rewritten, steps = labelled(text, labels)
    with tempfile.TemporaryFile(prefix="compat-matrix-context-") as tar:
        try:
            _context_tar(path.parent, rewritten, tar)
        except (OSError, tarfile.TarError) as e:
            return Built(False, "", f"the build context {path.parent} could not be read: {e}")
        built = engine.build_context(tar, tag, dockerfile=LABELLED_DOCKERFILE, build_args=build_args)
    found = layers(built.log, steps)
    image = (engine.image_id(tag) or "") if built.ok else ""
    return Built(built.ok, built.log, built.error, image, tuple(found))


def build_failure(built: Built, path: Path) -> Verdict:
    """Why a user's Dockerfile did not build: a RUN step of theirs failing is classified like an
    installer's output (the network, a killed step: infra); an image the engine could not pull is
    infra; anything else (a COPY of a missing file, a syntax error) is the Dockerfile's build-error."""
    error = redact(built.error) or "no error"
    m = _STEP_FAILED.search(built.error)
    if m is not None:
        lines = redact(built.log).splitlines()
        start = max((i for i, ln in enumerate(lines) if _STEP.match(ln)), default=-1) + 1
        output = "\n".join(ln for ln in lines[start:] if not ln.startswith((" ---> ", "Removing intermediate"))
                           and not _STEP_FAILED.search(ln))
        v = classify_install(output, returncode=int(m["code"]), only_binary=False)
        return Verdict(v.outcome, f"{path.name}: `{m['command'][:200]}` failed: {v.error}")
    if _PULL.search(built.error):
        return Verdict(Outcome.INFRA_ERROR, f"{path.name}: the engine could not get an image: {error}")
    return Verdict(Outcome.BUILD_ERROR, f"{path.name} did not build: {error}")


def _parse_inventory(stdout: str) -> Inventory | None:
    for line in stdout.splitlines():
        if line.startswith(_INVENTORY_MARK):
            data = json.loads(line[len(_INVENTORY_MARK):])
            dists = {str(n): Dist(str(d["version"]), tuple(str(r) for r in d.get("requires") or ()))
                     for n, d in (data.get("dists") or {}).items()}
            return Inventory(str(data["python"]), str(data["executable"]), dists)
    return None


def inventory(engine: Engine, image: str, name: str, labels: dict[str, str], memory: str,
              python: str | None = None) -> Inventory:
    """The interpreter and installed distributions of an image (`name` is how messages call it),
    read in a locked-down container. Raises NoPython when no interpreter runs there."""
    tried = []
    for candidate in ([python] if python else PYTHONS):
        try:
            ran = engine.run(image, ["-c", INVENTORY], entrypoint=[candidate], environment={"HOME": "/tmp"},
                             labels=labels, memory=memory, timeout_s=120.0)
        except EngineFault as e:
            if _NOT_FOUND.search(str(e)):
                tried.append(f"{candidate}: not in the image")
                continue
            raise
        found = _parse_inventory(ran.stdout) if ran.exit_code == 0 else None
        if found is not None:
            return found
        last = [ln.strip() for ln in (ran.stderr or ran.stdout).splitlines() if ln.strip()]
        tried.append(f"{candidate}: exit code {ran.exit_code}" + (f", {last[-1][:200]}" if last else ""))
    raise NoPython(f"no Python runs in {name}: " + "; ".join(tried))


def probe_image(engine: Engine, image: str, tag: str, labels: dict[str, str]) -> BuildResult:
    """The image plus the probes (one COPY layer): what the probe container runs."""
    with tempfile.TemporaryDirectory(prefix="compat-matrix-probes-") as tmp:
        ctx = Path(tmp)
        (ctx / "probes").mkdir()
        for name, source in probing.probe_files().items():
            (ctx / "probes" / name).write_bytes(source.read_bytes())
        label = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
        (ctx / "Dockerfile").write_text(f"FROM {image}\nLABEL {label}\nCOPY probes {layout.PROBES_DIR}\n",
                                        encoding="utf-8")
        return engine.build(ctx, tag)


def run_probes(engine: Engine, image: str, python: str, pins: dict[str, str], *, labels: dict[str, str],
               issue_probes: tuple[tuple[str, str], ...], memory: str, timeout_s: float,
               log_dir: Path) -> tuple[probing.DriverReport, Verdict]:
    """The probe driver in the probe image, as the sweep runs it; its report and verdict."""
    nonce = probing.new_nonce()
    env = probing.environment(_Pins(pins), nonce, timeout_s, issue_probes)  # type: ignore[arg-type]
    ran = engine.run(image, [layout.DRIVER], entrypoint=[python], environment=env,
                     labels={**labels, ROLE_LABEL: PROBE}, memory=memory,
                     timeout_s=probing.driver_timeout(timeout_s))
    return probing.conclude(ran, nonce, log_dir, memory)


@dataclass(frozen=True)
class _Pins:
    """What probing.environment reads of a cell: its pins."""

    pin_dict: dict[str, str]


def check_labels(run_id: str, *, keep: bool = False) -> dict[str, str]:
    """A check's images: its run's (removed when it ends), or for a Dockerfile's image with --keep
    the label of what outlives runs on purpose (`compat-matrix clean` removes it; no run reaps it
    as a dead run's)."""
    return {RUN_LABEL: "cache" if keep else run_id, ROLE_LABEL: CHECK}


