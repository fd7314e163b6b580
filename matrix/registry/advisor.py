"""The pin advisor: before a bump, what the results say about one pin.

`numpy==2.0.2 [on a base]`: the partner pins that pass with it, newest first; the cells that fail
and the known issue each hits; and the values of the other axes (partner versions, bases, modes)
no cell has evidence for. The reverse question ("the newest numpy that works with scipy==1.10.1")
is the same query with the package to maximise named: the partners are then sorted by it first.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from matrix.errors import ConfigError
from matrix.registry import Issue, Registry, collapse, evidence
from matrix.store import Outcome, Record

_QUERY = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.!+_-]+)\s*$")
_MODE_ORDER = {"together": 0, "layered": 1}


@dataclass(frozen=True)
class Query:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def parse_query(text: str) -> Query:
    """`name==version`; anything else (ranges, bare names, markers) is a ConfigError."""
    m = _QUERY.match(text or "")
    if not m:
        raise ConfigError("pins query", repr(text), "expected one exact pin, name==version",
                          "e.g. compat-matrix pins numpy==2.0.2 (ranges such as numpy>=2 are not pins)")
    return Query(m.group(1), m.group(2))


@dataclass(frozen=True)
class Seen:
    """One cell that pinned the queried version: its partners and its verdict."""

    cell: str
    base: str
    mode: str
    partners: tuple[tuple[str, str], ...]
    outcome: Outcome
    error: str = ""
    issue: Issue | None = None


@dataclass(frozen=True)
class Partners:
    """A partner pin set that passed with the queried pin, and where."""

    pins: tuple[tuple[str, str], ...]
    where: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Untested:
    """A value of another axis with no evidence alongside the queried pin, and where it lacks it."""

    axis: str  # a package name, or "base"
    value: str
    where: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Advice:
    query: Query
    base: str | None
    maximise: str | None
    passing: tuple[Partners, ...]
    warned: tuple[Seen, ...]
    failing: tuple[Seen, ...]
    untested: tuple[Untested, ...]
    # The versions of the queried package that do have evidence (shown when the query has none).
    tested_versions: tuple[str, ...]
    runs: tuple[str, ...]
    cells: int

    @property
    def best(self) -> Partners | None:
        """The newest passing partners (the answer to the reverse question)."""
        return self.passing[0] if self.passing else None


def _place_key(place: tuple[str, str]) -> tuple[str, int, str]:
    return (place[0], _MODE_ORDER.get(place[1], len(_MODE_ORDER)), place[1])


def _check_name(name: str, known: tuple[str, ...], what: str) -> str:
    """The records' spelling of a package name; ConfigError (with a guess) when no cell pins it."""
    for k in known:
        if evidence.canon(k) == evidence.canon(name):
            return k
    close = difflib.get_close_matches(name, list(known), n=1)
    raise ConfigError("pins query", what, f"no cell in the results pins {name!r}",
                      f"did you mean {close[0]!r}?" if close else f"the results pin: {', '.join(known) or 'nothing'}")


def advise(
    records: Iterable[Record],
    query: str | Query,
    base: str | None = None,
    registry: Registry | None = None,
    maximise: str | None = None,
    packages: Iterable[str] = (),
) -> Advice:
    """What the records say about one pin (optionally on one base, sorted by `maximise` first)."""
    q = parse_query(query) if isinstance(query, str) else query
    cells = evidence.with_verdict(evidence.current(records))
    order = evidence.package_order(cells, packages)
    name = _check_name(q.name, order, str(q))
    q = Query(name, q.version)
    bases = sorted({r.base for r in cells})
    if base is not None and base not in bases:
        close = difflib.get_close_matches(base, bases, n=1)
        raise ConfigError("pins query", "--base", f"no cell in the results ran on base {base!r}",
                          f"did you mean {close[0]!r}?" if close else f"the results have: {', '.join(bases)}")
    if maximise is not None:
        maximise = _check_name(maximise, order, "--newest")
        if evidence.canon(maximise) == evidence.canon(name):
            raise ConfigError("pins query", "--newest", f"{maximise} is the queried package itself",
                              "name a partner package, e.g. --newest numpy with scipy==1.10.1")
    others = tuple(n for n in order if evidence.canon(n) != evidence.canon(name))
    sort_order = (maximise, *(n for n in others if n != maximise)) if maximise else others
    scope = [r for r in cells if base is None or r.base == base]
    hits = [r for r in scope if evidence.agrees(r, {name: q.version})]
    reg = registry or Registry(None)

    def seen(r: Record) -> Seen:
        partners = tuple(evidence.ordered_pins({n: v for n, v in r.pins.items()
                                                if evidence.canon(n) != evidence.canon(name)}, others).items())
        return Seen(r.cell, r.base, r.mode, partners, r.outcome, r.error, reg.match_record(r))

    def newest(pins: tuple[tuple[str, str], ...]) -> tuple[object, ...]:
        return evidence.newest_key(dict(pins), sort_order)

    by_partners: dict[tuple[tuple[str, str], ...], list[tuple[str, str]]] = {}
    for r in hits:
        if r.outcome is Outcome.PASS:
            by_partners.setdefault(seen(r).partners, []).append((r.base, r.mode))
    passing = tuple(
        Partners(pins, tuple(sorted(set(where), key=_place_key)))
        for pins, where in sorted(by_partners.items(), key=lambda kv: newest(kv[0]), reverse=True)
    )

    def seen_order(items: list[Seen]) -> tuple[Seen, ...]:
        items = sorted(items, key=lambda s: newest(s.partners), reverse=True)
        return tuple(sorted(items, key=lambda s: _place_key((s.base, s.mode))))

    warned = seen_order([seen(r) for r in hits if r.outcome is Outcome.WARN])
    failing = seen_order([seen(r) for r in hits if r.outcome.is_incompatibility])
    places = sorted({(r.base, r.mode) for r in cells if base is None or r.base == base}, key=_place_key)
    untested: list[Untested] = []
    for b in ([base] if base else bases):
        if not any(r.base == b for r in hits):
            untested.append(Untested("base", b))
    for other in others:
        values = sorted({v for r in cells if (v := evidence.pin_of(r.pins, other))}, key=evidence.version_key,
                        reverse=True)
        for v in values:
            missing = tuple(p for p in places if not any(
                (r.base, r.mode) == p and evidence.agrees(r, {other: v}) for r in hits))
            # A base with no evidence at all is already listed once; don't repeat it per partner.
            missing = tuple(p for p in missing if any(r.base == p[0] for r in hits))
            if missing:
                untested.append(Untested(other, v, missing))
    tested_versions = tuple(sorted({v for r in scope if (v := evidence.pin_of(r.pins, name))},
                                   key=evidence.version_key, reverse=True))
    return Advice(
        query=q, base=base, maximise=maximise, passing=passing, warned=warned, failing=failing,
        untested=tuple(untested), tested_versions=tested_versions,
        runs=tuple(sorted({r.run_id for r in scope if r.run_id})), cells=len(hits),
    )


def _where(places: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{b}·{m}" for b, m in places)


def _partners(pins: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{n} {v}" for n, v in pins) or "(alone)"


def _short(text: str, limit: int = 110) -> str:
    text = collapse(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_advice(advice: Advice) -> str:
    """The advice for a terminal: passes, failures with their known issue and fix, untested."""
    q, on = advice.query, f" on {advice.base}" if advice.base else ""
    runs = f"run {', '.join(advice.runs)}" if advice.runs else "no run"
    lines = [f"{q}{on}: {advice.cells} cell(s) of evidence ({runs})"]
    if not advice.cells:
        tested = ", ".join(advice.tested_versions) or "none"
        lines.append(f"  untested: no cell{on} pinned {q}; tested versions of {q.name}{on}: {tested}")
        return "\n".join(lines) + "\n"
    if advice.maximise:
        best = advice.best
        if best is None:
            lines.append(f"newest {advice.maximise} that passes with {q}{on}: none passed")
        else:
            version = dict(best.pins).get(advice.maximise, "?")
            lines.append(f"newest {advice.maximise} that passes with {q}{on}: {version} "
                         f"({_partners(best.pins)}; {_where(best.where)})")
    width = max([len(_partners(p.pins)) for p in advice.passing]
                + [len(_partners(s.partners)) for s in (*advice.failing, *advice.warned)] + [8])
    lines.append("passes with (newest first):" if advice.passing else "passes with: nothing in the results")
    for p in advice.passing:
        lines.append(f"  {_partners(p.pins):<{width}}  {_where(p.where)}")
    if advice.warned:
        lines.append("passes with a warning (not known-good):")
        for s in advice.warned:
            lines.append(f"  {_partners(s.partners):<{width}}  {s.base}·{s.mode}  {_short(s.error)}")
    if advice.failing:
        lines.append("fails with:")
        place = max(len(f"{s.base}·{s.mode}") for s in advice.failing)
        for s in advice.failing:
            lines.append(f"  {_partners(s.partners):<{width}}  {s.base + '·' + s.mode:<{place}}  {s.outcome.value}")
            if s.issue is not None:
                lines.append(f"  {'':<{width}}    known issue {s.issue.name}: {s.issue.cause}")
                lines.append(f"  {'':<{width}}    fix: {s.issue.solution}")
            else:
                lines.append(f"  {'':<{width}}    {_short(s.error)}")
        if any(s.issue is None for s in advice.failing):
            lines.append("  (failures with no known issue: `compat-matrix registry` suggests entries for them)")
    if advice.untested:
        lines.append("untested (no cell has evidence):")
        for u in advice.untested:
            if u.axis == "base":
                lines.append(f"  base {u.value}: no cell pinned {q}")
            else:
                lines.append(f"  {u.axis} {u.value:<{max(width - len(u.axis) - 1, 1)}}  {_where(u.where)}")
    return "\n".join(lines) + "\n"
