"""The bounds audit: the requirements packages declare, against what really happens at runtime.

A `together` cell that the resolver refuses names the declared requirement in the way ("Because
scipy==1.11.4 depends on numpy>=1.21.6,<1.28.0 and you require numpy==2.2.6"). The `override` cell
with the same pins installs them anyway (uv's --override) and runs the probes:
- *needed*: the override cell breaks: the bound keeps a real incompatibility out;
- *too strict*: the override cell works (pass, or warn): the bound refuses pins that run;
- *untested*: no override cell of those pins has a verdict yet.
A `together` cell the resolver allowed that breaks at runtime is a *missing* bound: nothing declared
keeps those pins apart, yet they do not work together. Resolvers and `pip check` only read the
metadata; this reads the evidence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from matrix.install import PIN_CONFLICT
from matrix.registry import evidence
from matrix.store import Outcome, Record

_WORKS = (Outcome.PASS, Outcome.WARN)


@dataclass(frozen=True)
class Finding:
    verdict: str  # needed | too strict | untested | missing
    base: str
    pins: dict[str, str]
    # The declared requirement ("scipy 1.11.4: numpy>=1.21.6,<1.28.0"); empty for a missing bound.
    requirement: str = ""
    # The cells that say so, and what the runtime cell said.
    together: str = ""
    override: str = ""
    outcome: str = ""
    error: str = ""
    evidence: list[str] = field(default_factory=list)


def _key(r: Record) -> tuple[str, tuple[tuple[str, str], ...]]:
    return r.base, tuple(sorted(r.pins.items()))


def _declared(error: str) -> str | None:
    """The declared requirement a resolver conflict names: "scipy 1.11.4: numpy>=1.21.6,<1.28.0"."""
    m = PIN_CONFLICT.match(error)
    if m is None:
        return None
    rest = error[m.end("b"):error.index(" and you require")]
    return f"{m['a']} {m['av']}: {m['b']}{rest}"


def audit(records: Iterable[Record]) -> list[Finding]:
    """Findings from the table's records, in cell order: each declared bound a together cell ran
    into, judged by its override cell; each together cell the resolver allowed that broke."""
    cells = evidence.current(records)
    override = {_key(r): r for r in cells if r.mode == "override"}
    out: list[Finding] = []
    for r in sorted((r for r in cells if r.mode == "together"), key=lambda r: r.cell):
        if r.outcome is Outcome.RESOLVE_CONFLICT:
            declared = _declared(r.error)
            if declared is None:
                continue  # a conflict of more than one pin's own requirement: not one bound to judge
            o = override.get(_key(r))
            if o is None or o.outcome in (Outcome.INFRA_ERROR, Outcome.NOT_RUN):
                verdict = "untested"
            elif o.outcome in _WORKS:
                verdict = "too strict"
            elif o.outcome.is_incompatibility:
                verdict = "needed"
            else:
                continue
            out.append(Finding(verdict, r.base, dict(r.pins), declared, r.cell, o.cell if o else "",
                               o.outcome.value if o else "", o.error if o else ""))
        elif r.outcome in (Outcome.IMPORT_ERROR, Outcome.CRASH):
            out.append(Finding("missing", r.base, dict(r.pins), "", r.cell, "", r.outcome.value, r.error))
    return out


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"bounds": [asdict(f) for f in findings]}, indent=1, sort_keys=True) + "\n"


def markdown(findings: list[Finding]) -> str:
    """A section for matrix.md (and `compat-matrix bounds`)."""
    if not findings:
        return ""
    out = ["## Declared bounds against the evidence", "",
           "| verdict | base | declared requirement | pins | what the override cell did |", "|---|---|---|---|---|"]
    for f in findings:
        pins = ", ".join(f"{n}=={v}" for n, v in sorted(f.pins.items()))
        said = f"{f.outcome}: {_one_line(f.error)}" if f.error else f.outcome
        requirement = f.requirement or "(none declared: the resolver allowed the pins)"
        out.append(f"| {f.verdict} | {f.base} | {requirement} | {pins} | {said or 'no verdict yet'} |")
    out += ["", "needed: the override cell breaks; too strict: it works; missing: the resolver allowed pins "
            "that break at runtime (a bound the package should declare); untested: no override cell yet.", ""]
    return "\n".join(out)


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"
