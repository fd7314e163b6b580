"""Reads what pip reads: `pip` / `uv pip` command lines and requirements files, into pins.

Shared by the registry (a `solution:` line is a pip command) and the Dockerfile reader. Nothing
here runs an installer; it only says what a command would ask for.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from matrix.errors import ConfigError

_PIP = re.compile(r"^pip[0-9.]*$")
_PYTHON = re.compile(r"^python[0-9.]*$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Shell operators that end one command and start the next (shlex punctuation tokens).
_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}
# Words that run the command after them (`sudo pip install …`, `env X=1 pip install …`).
_PREFIXES = {"sudo", "env", "exec", "command", "time", "nice", "nohup"}

# pip's and uv's options that take a value; every other `-x` / `--xyz` is a flag.
_VALUE_OPTIONS = {
    "-r", "--requirement", "-c", "--constraint", "--override", "-e", "--editable",
    "-i", "--index-url", "--extra-index-url", "--index", "--default-index", "-f", "--find-links",
    "-t", "--target", "--prefix", "--root", "--platform", "--python-version", "--implementation",
    "--abi", "--only-binary", "--no-binary", "--trusted-host", "--cache-dir", "--src",
    "--progress-bar", "--root-user-action", "--upgrade-strategy", "--config-settings", "-C",
    "--global-option", "--report", "--python", "-p", "--index-strategy", "--resolution",
    "--prerelease", "--exclude-newer", "--keyring-provider", "--link-mode", "--extra", "--group",
    "--log", "--proxy", "--timeout", "--retries", "--exists-action", "--cert", "--client-cert",
    "--build-constraint", "-b", "--torch-backend", "--hash", "--use-feature", "--python-platform",
}
_SHORT_WITH_VALUE = ("-r", "-c", "-e", "-i", "-f", "-t", "-p", "-b", "-C")


@dataclass(frozen=True)
class Requested:
    """One requirement as written: `numpy==1.24.3`, `scipy`, a wheel file."""

    name: str
    specifier: str = ""
    # The exact version when the requirement pins one (`==1.24.3`, or a wheel's own version).
    pin: str | None = None
    text: str = ""
    # Where it was written: "requirements.txt:3"; empty for the command line itself.
    source: str = ""

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)


@dataclass(frozen=True)
class PipCommand:
    verb: str  # "install" or "uninstall" ("sync" is read as an install)
    tool: str  # "pip" or "uv"
    requirements: tuple[Requested, ...] = ()
    requirement_files: tuple[str, ...] = ()
    constraint_files: tuple[str, ...] = ()
    no_deps: bool = False
    # -U / --upgrade / --force-reinstall: a bare name replaces what is installed.
    upgrade: bool = False
    # Arguments that are not requirements: paths, URLs, editables, unresolved $VARIABLES.
    others: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()


def split_commands(shell: str) -> list[list[str]]:
    """A shell line as its simple commands (`a && b; c | d` → [a], [b], [c], [d]); quotes honoured."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    skip_next = False
    try:
        for token in lexer:
            if skip_next:
                skip_next = False
                continue
            if set(token) <= set("<>&") and ("<" in token or ">" in token):
                # A redirection: its target is a file, not an argument (`> log`, `2>&1`).
                if commands[-1] and commands[-1][-1].isdigit():
                    commands[-1].pop()
                skip_next = True
            elif token in _SEPARATORS or set(token) <= set("&|;()"):
                commands.append([])
            else:
                commands[-1].append(token)
    except ValueError:
        # An unbalanced quote: fall back to plain splitting rather than losing the line.
        commands = [[t for t in chunk.split() if t] for chunk in re.split(r"&&|\|\||;|\|", shell)]
    return [c for c in commands if c]


def parse_shell(shell: str) -> list[PipCommand]:
    """Every pip / uv pip install or uninstall in a shell line, in order."""
    out = []
    for tokens in split_commands(shell):
        cmd = parse_command(tokens)
        if cmd is not None:
            out.append(cmd)
    return out


def _installer_args(tokens: list[str]) -> tuple[str, list[str]] | None:
    """("pip" | "uv", the arguments after the executable), or None when it is not an installer."""
    i = 0
    while i < len(tokens) and (tokens[i] in _PREFIXES or _ASSIGNMENT.match(tokens[i])
                               or (i > 0 and tokens[i - 1] == "sudo" and tokens[i].startswith("-"))):
        i += 1
    words = tokens[i:]
    if not words:
        return None
    exe = os.path.basename(words[0])
    if _PIP.match(exe):
        return "pip", words[1:]
    if _PYTHON.match(exe):
        # python -m pip …, python -m uv pip …; interpreter flags (-u, -I) may come first.
        j = 1
        while j < len(words) and words[j].startswith("-") and words[j] != "-m":
            j += 1
        if words[j : j + 2] == ["-m", "pip"]:
            return "pip", words[j + 2 :]
        if words[j : j + 3] == ["-m", "uv", "pip"]:
            return "uv", words[j + 3 :]
        return None
    if exe == "uv" and len(words) > 1 and words[1] == "pip":
        return "uv", words[2:]
    return None


def parse_command(tokens: list[str]) -> PipCommand | None:
    """One simple command; None unless it is a pip / uv pip install, sync or uninstall."""
    found = _installer_args(tokens)
    if found is None:
        return None
    tool, args = found
    # pip takes global options before the verb (`pip --no-cache-dir install …`).
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _VALUE_OPTIONS else 1
    if i >= len(args) or args[i] not in ("install", "uninstall", "sync"):
        return None
    verb = args[i]
    specs: list[Requested] = []
    files: list[str] = []
    constraints: list[str] = []
    others: list[str] = []
    no_deps = upgrade = False
    rest = args[i + 1 :]
    j = 0
    while j < len(rest):
        arg = rest[j]
        j += 1
        option, value = arg, None
        if arg.startswith("--") and "=" in arg:
            option, value = arg.split("=", 1)
        elif arg.startswith(_SHORT_WITH_VALUE) and not arg.startswith("--") and len(arg) > 2:
            option, value = arg[:2], arg[2:]
        if option.startswith("-"):
            if option in _VALUE_OPTIONS and value is None:
                value = rest[j] if j < len(rest) else ""
                j += 1
            if option == "--no-deps":
                no_deps = True
            elif option in ("--upgrade", "--force-reinstall", "--reinstall") or (
                    not option.startswith("--") and "U" in option[1:]):  # -U, -qU
                upgrade = True
            elif option in ("-r", "--requirement"):
                files.append(value or "")
            elif option in ("-c", "--constraint", "--override"):
                # uv's overrides force versions the way constraints bound them: both read as pins.
                constraints.append(value or "")
            elif option in ("-e", "--editable"):
                others.append(value or "")
            continue
        if verb == "sync":
            files.append(arg)
            continue
        spec = parse_requirement(arg) if verb == "install" else _uninstall_name(arg)
        if spec is None:
            others.append(arg)
        else:
            specs.append(spec)
    return PipCommand(
        verb="install" if verb == "sync" else verb,
        tool=tool,
        requirements=tuple(specs),
        requirement_files=tuple(files),
        constraint_files=tuple(constraints),
        no_deps=no_deps,
        upgrade=upgrade,
        others=tuple(others),
        tokens=tuple(tokens),
    )


def _uninstall_name(arg: str) -> Requested | None:
    spec = parse_requirement(arg)
    return Requested(name=spec.name, text=arg) if spec is not None else None


def parse_requirement(text: str, source: str = "") -> Requested | None:
    """A requirement string or a wheel file name; None for paths, URLs and `$VARIABLES`."""
    text = text.strip()
    if not text or "$" in text:
        return None
    if text.endswith(".whl"):
        try:
            name, version, _, _ = parse_wheel_filename(os.path.basename(text))
        except InvalidWheelFilename:
            return None
        return Requested(name=str(name), specifier=f"=={version}", pin=str(version), text=text, source=source)
    if text.startswith((".", "/", "~")) or "://" in text.split("@", 1)[0]:
        return None
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    if req.url:
        return None
    specifiers = list(req.specifier)
    pin = None
    if len(specifiers) == 1 and specifiers[0].operator in ("==", "===") and "*" not in specifiers[0].version:
        pin = specifiers[0].version
    return Requested(name=req.name, specifier=str(req.specifier), pin=pin, text=text, source=source)


@dataclass(frozen=True)
class RequirementsFile:
    """A requirements file with its nested `-r` files read; `-c` files read as constraints."""

    requirements: tuple[Requested, ...]
    constraints: tuple[Requested, ...]


def read_requirements(path: Path, *, referenced_from: str, constraint: bool = False,
                      _seen: frozenset[Path] = frozenset()) -> RequirementsFile:
    """Read a requirements (or constraints) file; ConfigError naming it when it cannot be read."""
    path = path.resolve()
    if path in _seen:
        return RequirementsFile((), ())  # a file including itself: pip would loop, we stop
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", f"no such file (referenced from {referenced_from})",
                          "keep requirements and constraints files next to the Dockerfile, "
                          "at the path the Dockerfile copies them from") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "", f"cannot read it ({e})", "check the path and its permissions") from None
    requirements: list[Requested] = []
    constraints: list[Requested] = []
    seen = _seen | {path}
    for number, line in _logical_lines(text):
        where = f"{path.name}:{number}"
        tokens = line.split()
        if not tokens:
            continue
        head = tokens[0]
        nested, is_constraint = None, False
        if head in ("-r", "--requirement", "-c", "--constraint") and len(tokens) > 1:
            nested, is_constraint = tokens[1], head in ("-c", "--constraint")
        elif head.startswith(("--requirement=", "--constraint=")):
            nested, is_constraint = head.split("=", 1)[1], head.startswith("--constraint")
        elif head.startswith(("-r", "-c")) and len(head) > 2 and not head.startswith("--"):
            nested, is_constraint = head[2:], head.startswith("-c")
        if nested is not None:
            sub = read_requirements(path.parent / nested, referenced_from=where,
                                    constraint=constraint or is_constraint, _seen=seen)
            requirements += sub.requirements
            constraints += sub.constraints
            continue
        if head.startswith("-"):
            continue  # index options, --pre, -e paths: nothing pinned
        # Per-requirement options (--hash=…) follow the requirement itself.
        text_req = line.split(" --", 1)[0].strip()
        spec = parse_requirement(text_req, source=where)
        if spec is not None:
            (constraints if constraint else requirements).append(spec)
    return RequirementsFile(tuple(requirements), tuple(constraints))


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) with comments dropped and backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, (pending + line).strip()))
        pending = ""
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def apply_constraints(specs: tuple[Requested, ...], constraints: tuple[Requested, ...]) -> tuple[Requested, ...]:
    """Requirements with the pin a constraint gives them when they name none themselves."""
    pinned = {c.key: c for c in constraints if c.pin}
    return tuple(
        replace(s, pin=pinned[s.key].pin, specifier=f"=={pinned[s.key].pin}",
                source=f"{s.source}, pinned by {pinned[s.key].source}" if s.source else pinned[s.key].source)
        if s.pin is None and s.key in pinned else s
        for s in specs
    )


def install_pins(shell: str) -> dict[str, str]:
    """The exact pins the install commands of a shell line ask for, later commands winning."""
    pins: dict[str, str] = {}
    for cmd in parse_shell(shell):
        if cmd.verb != "install":
            continue
        for spec in cmd.requirements:
            if spec.pin:
                pins[spec.name] = spec.pin
    return pins
