"""Preflight as a pre-commit hook: `compat-matrix precommit FILE...` (`.pre-commit-hooks.yaml`).

pre-commit hands the hook the staged Dockerfiles and requirements files; each is checked the way
`compat-matrix preflight` checks a Dockerfile, with the file's last committed version (git's HEAD)
as the baseline, so a commit that drops a fix the previous version carried is refused ("fix not
carried forward") without anyone naming a baseline.

- A Dockerfile is read as preflight reads it. Its baseline is HEAD's text read with today's build
  context (the `-r` files it names are the working tree's).
- A requirements file is read as one `pip install -r FILE`: one resolver call, so `together`. Its
  baseline is HEAD's text; when that names nested `-r`/`-c` files, they are the working tree's.
- A file git does not know yet (new, or outside a repository) has no baseline.

Exit: 0 every file clean, 1 problems found in one (or, with --strict, warnings), 2 a file could not be
read (the message names it). Nothing here touches the network: only git, the files and the results.
"""

from __future__ import annotations

import fnmatch
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from matrix.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from matrix.registry import Registry, pipcmd, preflight
from matrix.registry.dockerparse import Dockerfile, Req, Stage, Step, parse, parse_text
from matrix.store import Record

# The Dockerfiles among what .pre-commit-hooks.yaml's `files:` selects (the rest are requirements files).
DOCKERFILE_NAMES = ("Dockerfile", "Dockerfile.*", "*.Dockerfile", "*.dockerfile", "Containerfile",
                    "Containerfile.*")
GIT_TIMEOUT_S = 30.0
REQUIREMENTS_IMAGE = "(a requirements file: no image)"


def is_dockerfile(path: Path) -> bool:
    return any(fnmatch.fnmatchcase(path.name, p) for p in DOCKERFILE_NAMES)


def committed_text(path: Path) -> str | None:
    """The file as git's HEAD holds it; None when git has no committed version (or no git answers)."""
    try:
        proc = subprocess.run(["git", "-C", str(path.parent.resolve()), "show", f"HEAD:./{path.name}"],
                              capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        return proc.stdout.decode("utf-8")
    except UnicodeDecodeError:
        return None


def requirements_dockerfile(path: Path, *, shown_as: Path | None = None) -> Dockerfile:
    """A requirements file as the image `pip install -r FILE` makes: one stage, one step."""
    where = shown_as or path
    read = pipcmd.read_requirements(path, referenced_from=f"{where} (the pre-commit hook)")
    specs = pipcmd.apply_constraints(read.requirements, read.constraints)
    # Requested.source is "requirements.txt:3"; a nested file's requirement counts as line 1 of this one.
    installs = [Req(s, _line_number(s.source) if s.source.startswith(path.name + ":") else 1) for s in specs]
    step = Step(index=1, line=1, run_line=1, verb="install", tool="pip", installs=tuple(installs),
                constrained=tuple(sorted({c.key for c in read.constraints if c.pin})),
                text=f"pip install -r {where.name}")
    # One "image" for every requirements file, so a baseline's never differs from the file's own.
    return Dockerfile(where, (Stage(None, REQUIREMENTS_IMAGE, 1, (step,)),))


def _line_number(source: str) -> int:
    head = source.split(",")[0]
    _, _, number = head.rpartition(":")
    return int(number) if number.isdigit() else 1


def _read(path: Path, build_args: dict[str, str]) -> tuple[Dockerfile, Dockerfile | None]:
    """The file and its committed version (None when git has none, or it no longer parses)."""
    old = committed_text(path)
    if is_dockerfile(path):
        df = parse(path, build_args)
        if old is None:
            return df, None
        try:
            return df, parse_text(old, Path(f"{path} (HEAD)"), build_args, path.parent)
        except ConfigError:
            return df, None
    df = requirements_dockerfile(path)
    if old is None:
        return df, None
    with tempfile.TemporaryDirectory(prefix="compat-matrix-hook-") as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(old, encoding="utf-8")
        try:
            return df, requirements_dockerfile(copy, shown_as=Path(f"{path} (HEAD)"))
        except ConfigError:
            return df, None  # nested files the old version named are gone: no baseline to hold it to


def check(files: Sequence[Path], records: Iterable[Record], registry: Registry, *, base: str | None = None,
          images: dict[str, str] | None = None, build_args: dict[str, str] | None = None,
          strict: bool = False) -> tuple[int, str]:
    """(exit code, text) for the files pre-commit passed: the worst file's code, every file's report."""
    records = list(records)
    code, out = EXIT_OK, []
    for path in files:
        try:
            df, baseline = _read(Path(path), dict(build_args or {}))
            report = preflight.preflight(df, baseline, records, registry, base=base, images=images)
        except ConfigError as e:
            out.append(f"compat-matrix precommit: {e}\n")
            code = max(code, EXIT_CONFIG)
            continue
        if baseline is not None:
            out.append(f"{path}: baseline: the last committed version (git HEAD)\n")
        out.append(report.format())
        code = max(code, report.exit_code(strict))
    return code, "".join(out)
