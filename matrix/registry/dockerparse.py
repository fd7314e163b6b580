"""Reads a user's Dockerfile: what the final image installs with pip, from which line, in what order.

FROM (stage names, ARG defaults substituted), every `pip install` / `python -m pip install` /
`pip3 install` / `uv pip install` and `pip uninstall` in RUN lines (backslash continuations, `&&`
chains, exec form, heredocs), `-r` / `-c` files read from the build context (taken to be the
Dockerfile's directory; COPY and bind-mount destinations are mapped back to it), each with the line
it is written on. `effective()` then says which pins the final image ends with and whether they
were installed together (one installer call) or layered (one after another, or forced --no-deps).

Static reading only: it cannot see what FROM images already hold, nor what an unpinned install
pulls in; preflight says so where it matters.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from matrix.errors import ConfigError
from matrix.inputs import read_text
from matrix.registry import pipcmd
from matrix.registry.pipcmd import Requested

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_HEREDOC = re.compile(r"<<(-?)\s*[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?")
_RUN_FLAG = re.compile(r"^--(mount|network|security|device)=(\S+)\s*")


@dataclass(frozen=True)
class Req:
    """A requirement one step installs, with the Dockerfile line it comes from."""

    spec: Requested
    line: int

    def where(self) -> str:
        return f"line {self.line}" + (f" ({self.spec.source})" if self.spec.source else "")


@dataclass(frozen=True)
class Step:
    """One pip / uv pip command of a RUN line."""

    index: int  # order within the whole file
    line: int  # the physical line the command starts on
    run_line: int  # the line of its RUN instruction
    verb: str  # "install" or "uninstall"
    tool: str
    installs: tuple[Req, ...] = ()
    removes: tuple[str, ...] = ()
    no_deps: bool = False
    upgrade: bool = False
    constrained: tuple[str, ...] = ()  # package keys a -c file pins for this command
    others: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class Stage:
    name: str | None
    image: str  # the FROM argument, ARGs substituted
    line: int
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    stages: tuple[Stage, ...]
    # Things the reader saw but could not follow, with their line: shown as preflight notes.
    notes: tuple[tuple[int, str], ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    def chain(self) -> list[Stage]:
        """The final stage and the stages it is built FROM, root first (COPY --from stages are not)."""
        if not self.stages:
            return []
        by_name = {s.name: s for s in self.stages if s.name}
        chain = [self.stages[-1]]
        while chain[0].image in by_name and by_name[chain[0].image] not in chain:
            chain.insert(0, by_name[chain[0].image])
        return chain

    @property
    def base_image(self) -> str | None:
        """The image the final stage ultimately builds on."""
        chain = self.chain()
        return chain[0].image if chain else None

    @property
    def from_line(self) -> int:
        chain = self.chain()
        return chain[0].line if chain else 0

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(step for stage in self.chain() for step in stage.steps)


@dataclass(frozen=True)
class Installed:
    req: Req
    step: Step

    @property
    def pin(self) -> str | None:
        return self.req.spec.pin


@dataclass(frozen=True)
class Effective:
    """What the final image holds, as far as the file says: package key → its last install."""

    installed: dict[str, Installed] = field(default_factory=dict)

    def get(self, name: str) -> Installed | None:
        return self.installed.get(canonicalize_name(name))

    def pin(self, name: str) -> str | None:
        entry = self.get(name)
        return entry.pin if entry else None

    def present(self, name: str) -> bool:
        return self.get(name) is not None

    def pins(self) -> dict[str, str]:
        """name (as written) → exact version, for every pinned package."""
        return {e.req.spec.name: e.pin for e in self.installed.values() if e.pin}

    def mode(self, names: list[str]) -> str | None:
        """together: one installer call set every pin; layered: several did, or --no-deps forced one.

        None with fewer than two pinned packages: there is nothing to be together or layered with.
        """
        entries = [e for n in names if (e := self.get(n)) is not None and e.pin]
        if len(entries) < 2:
            return None
        steps = {e.step.index for e in entries}
        if len(steps) == 1 and not entries[0].step.no_deps:
            return "together"
        return "layered"

    def order(self, names: list[str]) -> list[Installed]:
        """The pinned packages among names in the order their last install ran."""
        entries = [e for n in names if (e := self.get(n)) is not None and e.pin]
        return sorted(entries, key=lambda e: e.step.index)


def effective(df: Dockerfile) -> Effective:
    """Replay the final image's pip commands: later commands override earlier pins, uninstall removes."""
    state: dict[str, Installed] = {}
    for step in df.steps:
        if step.verb == "uninstall":
            for name in step.removes:
                state.pop(canonicalize_name(name), None)
            continue
        for req in step.installs:
            key = req.spec.key
            old = state.get(key)
            if req.spec.pin is None and old is not None and old.pin and not step.upgrade:
                # pip leaves an installed version that satisfies the request alone.
                if _satisfies(old.pin, req.spec.specifier):
                    continue
            state[key] = Installed(req, step)
    return Effective(state)


def _satisfies(version: str, specifier: str) -> bool:
    try:
        return SpecifierSet(specifier).contains(version, prereleases=True)
    except InvalidSpecifier:
        return False


@dataclass
class _Instruction:
    keyword: str
    args: str
    line: int
    physical: list[tuple[int, str]]
    heredoc: list[tuple[int, str]] = field(default_factory=list)
    # The heredoc is the RUN's script (`RUN <<EOF`, `RUN bash <<EOF`), not a file's content.
    heredoc_is_script: bool = False


def _instructions(text: str) -> list[_Instruction]:
    lines = text.splitlines()
    out: list[_Instruction] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        if not raw.strip() or raw.lstrip().startswith("#"):
            i += 1
            continue
        start = i + 1
        physical = [(i + 1, raw)]
        joined = raw.rstrip()
        while joined.endswith("\\") and i + 1 < len(lines):
            joined = joined[:-1]
            i += 1
            nxt = lines[i]
            # Comment lines inside a continuation are dropped by Docker's parser, blank ones too.
            if nxt.lstrip().startswith("#") or not nxt.strip():
                joined += "\\"
                continue
            physical.append((i + 1, nxt))
            joined += " " + nxt.rstrip()
        i += 1
        keyword, _, args = joined.strip().partition(" ")
        instr = _Instruction(keyword.upper(), args.strip(), start, physical)
        heredoc = _HEREDOC.search(args) if instr.keyword == "RUN" else None
        if heredoc:
            before = args[: heredoc.start()].split()
            instr.heredoc_is_script = not before or before[-1] in ("sh", "bash", "/bin/sh", "/bin/bash")
            strip_tabs, delimiter = heredoc.group(1) == "-", heredoc.group(2)
            while i < len(lines):
                body = lines[i].lstrip("\t") if strip_tabs else lines[i]
                i += 1
                if body.strip() == delimiter:
                    break
                instr.heredoc.append((i, body))
        out.append(instr)
    return out


def substitute(text: str, variables: dict[str, str]) -> str:
    """${VAR}, $VAR, ${VAR:-default}, ${VAR:+alt} from ARG / ENV values; unknown ones left as written."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        value = variables.get(name)
        op, word = m.group(2), m.group(3) or ""
        if op in (":-", "-"):
            return value if value else word
        if op in (":+", "+"):
            return word if value else ""
        return value if value is not None else m.group(0)

    return _VAR.sub(sub, text)


def _assignments(args: str, keyword: str) -> list[tuple[str, str | None]]:
    try:
        words = shlex.split(args)
    except ValueError:
        words = args.split()
    if keyword == "ENV" and words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]  # the legacy `ENV NAME value` form
    out: list[tuple[str, str | None]] = []
    for w in words:
        name, eq, value = w.partition("=")
        out.append((name, value if eq else None))
    return out


@dataclass
class _StageState:
    name: str | None
    image: str
    line: int
    variables: dict[str, str]
    workdir: str = "/"
    # (sources in the build context, destination in the image): COPY lines and bind mounts.
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


class _Reader:
    def __init__(self, path: Path, build_args: dict[str, str], context: Path) -> None:
        self.path = path
        self.build_args = build_args
        self.context = context
        self.notes: list[tuple[int, str]] = []
        self.index = 0

    def read(self, text: str) -> Dockerfile:
        global_args: dict[str, str] = {}
        stages: list[_StageState] = []
        for ins in _instructions(text):
            if ins.keyword == "ARG":
                for name, default in _assignments(ins.args, "ARG"):
                    scope = stages[-1].variables if stages else global_args
                    value = self.build_args.get(name, default if default is not None else global_args.get(name))
                    if value is not None:
                        scope[name] = substitute(value, scope if stages else global_args)
            elif ins.keyword == "FROM":
                stages.append(self.from_(ins, global_args, stages))
            elif not stages:
                continue  # only ARG may precede FROM; docker build refuses the rest
            elif ins.keyword == "ENV":
                st = stages[-1]
                for name, value in _assignments(ins.args, "ENV"):
                    if value is not None:
                        st.variables[name] = substitute(value, st.variables)
            elif ins.keyword == "WORKDIR":
                st = stages[-1]
                st.workdir = posixpath.normpath(posixpath.join(st.workdir, substitute(ins.args, st.variables)))
            elif ins.keyword in ("COPY", "ADD"):
                self.copy(ins, stages[-1])
            elif ins.keyword == "RUN":
                self.run(ins, stages[-1])
        return Dockerfile(
            self.path,
            tuple(Stage(s.name, s.image, s.line, tuple(s.steps)) for s in stages),
            tuple(self.notes),
        )

    def from_(self, ins: _Instruction, global_args: dict[str, str], stages: list[_StageState]) -> _StageState:
        words = [w for w in ins.args.split() if not w.startswith("--platform")]
        if not words:
            raise ConfigError(str(self.path), f"line {ins.line}", "FROM names no image", "write FROM image[:tag]")
        image = substitute(words[0], global_args)
        if "$" in image:
            self.notes.append((ins.line, f"FROM {words[0]}: a build arg with no default; pass it with --build-arg"))
        name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
        parent = next((s for s in reversed(stages) if s.name and s.name == image), None)
        if parent is not None:
            # A stage built FROM another inherits its ENV, working directory and files.
            return _StageState(name, image, ins.line, dict(parent.variables), parent.workdir, list(parent.copies))
        return _StageState(name, image, ins.line, {})

    def copy(self, ins: _Instruction, st: _StageState) -> None:
        args = substitute(ins.args, st.variables)
        if args.lstrip().startswith("["):
            try:
                words = [str(w) for w in json.loads(args)]
            except ValueError:
                return
        else:
            words = args.split()
        if any(w.startswith("--from") for w in words):
            return  # from another stage or image: not the build context
        words = [w for w in words if not w.startswith("--")]
        if len(words) < 2:
            return
        dest = words[-1]
        # "." and "dir/" name a directory the sources are copied into.
        into = dest.endswith(("/", "/.")) or dest == "."
        dest = posixpath.normpath(dest if dest.startswith("/") else posixpath.join(st.workdir, dest))
        st.copies.append(([w.lstrip("/") or "." for w in words[:-1]], dest.rstrip("/") + "/" if into else dest))

    def run(self, ins: _Instruction, st: _StageState) -> None:
        args = ins.args
        flags = []
        while (flag := _RUN_FLAG.match(args)) is not None:
            if flag.group(1) == "mount":
                self.mount(flag.group(2), st)
            flags.append(flag.group(0).strip())
            args = args[flag.end():]
        if args.lstrip().startswith("["):
            try:
                words = [str(w) for w in json.loads(args)]
            except ValueError:
                words = []
            if len(words) >= 3 and words[-2] == "-c":
                chunks = [(ins.physical, substitute(words[-1], st.variables))]
            else:
                chunks = [(ins.physical, shlex.join(substitute(w, st.variables) for w in words))]
        elif ins.heredoc_is_script:
            chunks = [([(n, t)], substitute(t, st.variables)) for n, t in _join_heredoc(ins.heredoc)]
        else:
            chunks = [(ins.physical, substitute(args, st.variables))]
        for physical, shell in chunks:
            text = _Located(physical)
            for written in flags if physical is ins.physical else []:
                text.advance(written)  # `--mount=…,target=/root/.cache/pip` is not the pip command
            for tokens in pipcmd.split_commands(shell):
                # Walk the raw text token by token, so each command and requirement gets its own line.
                start = text.advance(tokens[0])
                cmd = pipcmd.parse_command(tokens)
                if cmd is None:
                    for token in tokens[1:]:
                        text.advance(token)
                    continue
                self.step(cmd, ins, st, text.line(start), text)

    def mount(self, spec: str, st: _StageState) -> None:
        parts = dict(p.partition("=")[::2] for p in spec.split(","))
        if parts.get("type", "bind") != "bind" or "from" in parts:
            return
        source = parts.get("source") or parts.get("src") or "."
        target = parts.get("target") or parts.get("dst") or parts.get("destination")
        if target:
            st.copies.append(([source.lstrip("/") or "."], target))

    def step(self, cmd: pipcmd.PipCommand, ins: _Instruction, st: _StageState, line: int, text: _Located) -> None:
        installs: list[Req] = []
        for spec in cmd.requirements:
            installs.append(Req(spec, text.line(text.advance(spec.text))))
        for token in cmd.tokens[-1:]:
            text.advance(token)
        constraints: list[Requested] = []
        for option, files, as_constraint in (("-r", cmd.requirement_files, False), ("-c", cmd.constraint_files, True)):
            for f in files:
                host = self.host_path(f, st)
                where = f"{self.path.name} line {line} ({option} {f})"
                read = pipcmd.read_requirements(host, referenced_from=where, constraint=as_constraint)
                installs += [Req(s, line) for s in read.requirements]
                constraints += read.constraints
        pinned = pipcmd.apply_constraints(tuple(r.spec for r in installs), tuple(constraints))
        installs = [Req(spec, r.line) for spec, r in zip(pinned, installs, strict=True)]
        for other in cmd.others:
            if "$" in other:
                self.notes.append((line, f"{other}: a variable with no value here; pass it with --build-arg"))
        self.index += 1
        st.steps.append(Step(
            index=self.index,
            line=line,
            run_line=ins.line,
            verb=cmd.verb,
            tool=cmd.tool,
            installs=tuple(installs) if cmd.verb == "install" else (),
            removes=tuple(s.name for s in cmd.requirements) if cmd.verb == "uninstall" else (),
            no_deps=cmd.no_deps,
            upgrade=cmd.upgrade,
            constrained=tuple(sorted({c.key for c in constraints if c.pin})),
            others=cmd.others,
            text=shlex.join(cmd.tokens),
        ))

    def host_path(self, name: str, st: _StageState) -> Path:
        """Where a file the RUN line names lives in the build context (COPY / mount mapped back)."""
        in_image = posixpath.normpath(name if name.startswith("/") else posixpath.join(st.workdir, name))
        for sources, dest in reversed(st.copies):
            for src in sources:
                for host in sorted(self.context.glob(src)) if any(c in src for c in "*?[") else [self.context / src]:
                    target = dest.rstrip("/") or "/"
                    if host.is_dir():
                        if in_image == target or in_image.startswith(target + "/"):
                            candidate = host / posixpath.relpath(in_image, target)
                            if candidate.exists():
                                return candidate
                    elif dest.endswith("/") or len(sources) > 1 or any(c in src for c in "*?["):
                        if in_image == posixpath.join(target, host.name):
                            return host
                    elif in_image == posixpath.normpath(dest):
                        return host
        if not name.startswith("/"):
            return self.context / name
        beside = self.context / posixpath.basename(name)
        return beside if beside.exists() else self.context / name.lstrip("/")


def _join_heredoc(body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, text in body:
        if not pending:
            start = number
        if text.rstrip().endswith("\\"):
            pending += text.rstrip()[:-1] + " "
            continue
        out.append((start, pending + text))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


class _Located:
    """An instruction's raw lines, searched left to right: where each token was written."""

    def __init__(self, physical: list[tuple[int, str]]) -> None:
        self.text = "\n".join(t for _, t in physical)
        self.numbers = [n for n, _ in physical]
        self.pos = 0

    def advance(self, token: str) -> int:
        """The offset of the token at or after the cursor; the cursor moves past it (stays if absent)."""
        at = self.text.find(token, self.pos)
        if at < 0:
            return self.pos
        self.pos = at + len(token)
        return at

    def line(self, offset: int) -> int:
        return self.numbers[self.text.count("\n", 0, offset)]


def parse(path: str | Path, build_args: dict[str, str] | None = None, context: Path | None = None) -> Dockerfile:
    """Read a Dockerfile; ConfigError naming it (or a requirements file it uses) when unreadable."""
    p = Path(path)
    return parse_text(read_text(p, "Dockerfile", "pass the path of an existing Dockerfile"), p, build_args, context)


def parse_text(text: str, path: Path, build_args: dict[str, str] | None = None,
               context: Path | None = None) -> Dockerfile:
    """A Dockerfile's text read as the file at `path` (an older version of it: the pre-commit hook's baseline)."""
    p = Path(path)
    df = _Reader(p, dict(build_args or {}), context or p.parent).read(text)
    if not df.stages:
        raise ConfigError(str(p), "", "no FROM instruction: not a Dockerfile", "pass the Dockerfile itself")
    return df

