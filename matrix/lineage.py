"""What a series of the user's own images says together (`compat-matrix check Dockerfile.v*`).

Lineage: per version its verdict, the registry fixes its *built image* carries (read from the
installed versions, so a fix inherited through FROM counts), the last version before it that
worked, and for a failing version each fix the last working one carried and this one does not
("fix not carried forward"), with the Dockerfile line that dropped or overrode it when one did.

Drift: what each installing RUN step of a Dockerfile changed in the installed set (added,
removed, upgraded, downgraded, or replaced: a new version that breaks what an installed
distribution requires), read from the inventories of the build's intermediate images.

Pure: the inventories come in as plain mappings; no engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from matrix.registry import Issue
from matrix.registry.evidence import same_version
from matrix.store import Outcome

# name → (version, what it requires): one image's installed distributions.
Installed = Mapping[str, tuple[str, tuple[str, ...]]]


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """v74.3 < v75 < v76 < v77-numpy-fix < v100: digits compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|[^\d]+", text))


def target_id(target: str, *, is_dockerfile: bool) -> str:
    """A check's cell id: Dockerfile.v76 → v76 (a plain Dockerfile: its directory's name);
    test:v78 → v78 (an image without a tag: its last name)."""
    if is_dockerfile:
        name = target.rstrip("/").rsplit("/", 1)[-1]
        for prefix in ("Dockerfile.", "Dockerfile-", "dockerfile."):
            if name.startswith(prefix) and len(name) > len(prefix):
                return _safe(name[len(prefix):])
        if name.endswith(".Dockerfile") and len(name) > len(".Dockerfile"):
            return _safe(name[: -len(".Dockerfile")])
        parts = target.rstrip("/").split("/")
        return _safe(parts[-2] if len(parts) > 1 and name.lower() == "dockerfile" else name)
    ref = target.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return _safe(tag if tag and tag != "latest" else name)


def _safe(text: str) -> str:
    """What an id may be: a file name and an image tag ([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:100].rstrip("-.") or "image"


def canon(installed: Installed) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """canonical name → (name as installed, version, requires)."""
    return {canonicalize_name(n): (n, v, r) for n, (v, r) in installed.items()}


def _older(a: str, b: str) -> bool:
    try:
        return Version(a) < Version(b)
    except InvalidVersion:
        return a < b


@dataclass(frozen=True)
class Change:
    kind: str  # added, removed, upgraded, downgraded, replaced
    name: str
    old: str | None
    new: str | None
    # Installed distributions whose requirement the new version breaks: (name, version, requirement).
    under: tuple[tuple[str, str, str], ...] = ()

    def describe(self) -> str:
        if self.kind == "added":
            return f"added {self.name} {self.new}"
        if self.kind == "removed":
            return f"removed {self.name} {self.old}"
        text = f"{self.kind} {self.name} {self.old} → {self.new}"
        if self.under:
            text += " under " + ", ".join(f"{n} {v} (which requires {req})" for n, v, req in self.under)
        return text


@dataclass(frozen=True)
class StepDrift:
    """What one RUN step changed in the installed set."""

    line: int
    command: str
    changes: tuple[Change, ...]

    def describe(self) -> str:
        if not self.changes:
            return f"RUN line {self.line} (`{self.command}`) changed nothing installed"
        return f"RUN line {self.line} (`{self.command}`) " + "; ".join(c.describe() for c in self.changes)


def _breaks(dependent_requires: Iterable[str], name: str, version: str) -> str | None:
    """The requirement on `name` that `version` does not satisfy, if any."""
    for text in dependent_requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != name or not req.specifier:
            continue
        if req.marker is not None:
            try:
                if not req.marker.evaluate({"extra": ""}):
                    continue
            except Exception:  # noqa: BLE001 - a marker this Python cannot evaluate: not counted
                continue
        try:
            if not req.specifier.contains(version, prereleases=True):
                return f"{req.name}{req.specifier}"
        except InvalidVersion:
            continue
    return None


def drift(before: Installed, after: Installed) -> list[Change]:
    """What changed from one inventory to the next, in name order."""
    a, b = canon(before), canon(after)
    out: list[Change] = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            out.append(Change("added", b[key][0], None, b[key][1]))
        elif key not in b:
            out.append(Change("removed", a[key][0], a[key][1], None))
        elif not same_version(a[key][1], b[key][1]):
            old, new = a[key][1], b[key][1]
            under = tuple((n, v, broken) for dep, (n, v, reqs) in sorted(b.items())
                          if dep != key for broken in [_breaks(reqs, key, new)] if broken)
            kind = "replaced" if under else ("downgraded" if _older(new, old) else "upgraded")
            out.append(Change(kind, b[key][0], old, new, under))
    return out


def carries(issue: Issue, versions: Mapping[str, str]) -> bool:
    """Whether an image carries an issue's tested fix: every pin of it installed at that version."""
    if not issue.requires:
        return False
    have = {canonicalize_name(n): v for n, v in versions.items()}
    return all(same_version(have.get(canonicalize_name(n)), v) for n, v in issue.requires)


@dataclass
class Checked:
    """One checked version of the series, as lineage reads it."""

    id: str
    outcome: Outcome
    versions: dict[str, str]
    # The Dockerfile's steps' drift (empty for an image reference) and its FROM line and image.
    steps: list[StepDrift] = field(default_factory=list)
    from_line: int = 0
    from_image: str = ""


@dataclass(frozen=True)
class Missing:
    issue: str
    fix: str  # "numpy==1.24.3 scipy==1.10.1"
    here: str  # "numpy 2.2.6, scipy 1.11.4"
    where: str  # "RUN line 9 (`pip install numpy==2.2.6`) replaced numpy ..." or how it came


@dataclass(frozen=True)
class Entry:
    id: str
    outcome: Outcome
    carried: tuple[str, ...]
    inherited: tuple[str, ...]  # of carried: their pins came through FROM, no step of its own set them
    last_working: str | None
    missing: tuple[Missing, ...] = ()


def _works(outcome: Outcome) -> bool:
    return outcome in (Outcome.PASS, Outcome.WARN)


def _culprit(v: Checked, names: Iterable[str]) -> str:
    """The step that left a fix's package where it is, or how it came to be there."""
    keys = {canonicalize_name(n) for n in names}
    found: StepDrift | None = None
    for step in v.steps:
        if any(canonicalize_name(c.name) in keys for c in step.changes):
            found = step
    if found is not None:
        mine = [c for c in found.changes if canonicalize_name(c.name) in keys]
        return f"RUN line {found.line} (`{found.command}`) " + "; ".join(c.describe() for c in mine)
    if v.from_image:
        return f"inherited through FROM {v.from_image} (line {v.from_line}); no step of its own sets it"
    return "as the image has it"


def lineage(series: list[Checked], issues: Iterable[Issue]) -> list[Entry]:
    """The series in natural version order, each with its fixes and what it lost."""
    fixes = [i for i in issues if i.requires]
    out: list[Entry] = []
    last: tuple[Checked, tuple[str, ...]] | None = None
    for v in sorted(series, key=lambda x: natural_key(x.id)):
        carried = tuple(i.name for i in fixes if carries(i, v.versions))
        own = {canonicalize_name(c.name) for s in v.steps for c in s.changes}
        inherited = tuple(i.name for i in fixes if i.name in carried
                          and not any(canonicalize_name(n) in own for n, _ in i.requires))
        missing: list[Missing] = []
        if not _works(v.outcome) and last is not None:
            have = {canonicalize_name(n): (n, ver) for n, ver in v.versions.items()}
            for issue in fixes:
                if issue.name in last[1] and issue.name not in carried:
                    here = ", ".join(f"{have[canonicalize_name(n)][0]} {have[canonicalize_name(n)][1]}"
                                     if canonicalize_name(n) in have else f"no {n}" for n, _ in issue.requires)
                    fix = " ".join(f"{n}=={ver}" for n, ver in issue.requires)
                    missing.append(Missing(issue.name, fix, here, _culprit(v, [n for n, _ in issue.requires])))
        out.append(Entry(v.id, v.outcome, carried, inherited, last[0].id if last else None, tuple(missing)))
        if _works(v.outcome):
            last = (v, carried)
    return out


def format_lineage(entries: list[Entry]) -> list[str]:
    """Markdown lines: one per version, then what each failing one lost."""
    if not entries:
        return []
    lines = ["## Lineage", "", "| version | verdict | fixes carried | last working before it |", "|---|---|---|---|"]
    for e in entries:
        carried = ", ".join(f"{n} (inherited through FROM)" if n in e.inherited else n for n in e.carried) or "none"
        lines.append(f"| {e.id} | {e.outcome.value} | {carried} | {e.last_working or '—'} |")
    lines.append("")
    working = [e.id for e in entries if _works(e.outcome)]
    lines.append(f"Last version that worked: {working[-1]}." if working else "No version worked.")
    for e in entries:
        for m in e.missing:
            lines.append(f"- {e.id}: fix not carried forward: {m.issue} ({m.fix}) was in {e.last_working}, "
                         f"missing here ({m.here}): {m.where}")
    lines.append("")
    return lines


def format_drift(by_target: Mapping[str, list[StepDrift]]) -> list[str]:
    lines: list[str] = []
    for target, steps in by_target.items():
        if not steps:
            continue
        if not lines:
            lines += ["## What each install step changed", ""]
        lines.append(f"### {target}")
        lines += [f"- {s.describe()}" for s in steps]
        lines.append("")
    return lines
