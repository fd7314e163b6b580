"""Known-good pins derived from sweep records, written to known-good.yaml beside the registry.

For each base and install mode: the newest pin set whose cell passed, with provenance (run id,
run date, how many cells on that base · mode it was chosen from). For each registry issue: the
cells that hit it and the tested pin sets that avoid it on the same bases and modes.

Only `pass` counts as known-good, not `warn`: a warn cell survived the probes but printed a
signal of breakage ("compiled using NumPy 1.x cannot be run in NumPy 2…") in code the probes do
not reach; recommending it would hand the user the next "same error recurs".

The tool owns this file outright and regenerates it on every write: the hand-written registry
(known-issues.yaml) is never touched, so its fields and comments can never be lost. Output is
sorted, so the same records give the same bytes apart from the `generated:` date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from matrix.paths import atomic_write
from matrix.registry import Registry, evidence
from matrix.store import Outcome, Record

FILE_NAME = "known-good.yaml"
_MODE_ORDER = {"together": 0, "layered": 1}


@dataclass(frozen=True)
class PinSet:
    base: str
    mode: str
    pins: tuple[tuple[str, str], ...]
    cell: str
    run_id: str

    @property
    def date(self) -> str | None:
        return evidence.run_date(self.run_id)


@dataclass(frozen=True)
class KnownGood:
    """The newest passing pin set of one base · mode, and the cells it was chosen from."""

    best: PinSet
    passed: int
    tested: int


@dataclass(frozen=True)
class NoPass:
    base: str
    mode: str
    tested: int


@dataclass(frozen=True)
class IssueEvidence:
    name: str
    hit_in: tuple[str, ...]
    # Per base · mode where the issue was hit: the passing pin sets there, newest first.
    avoided_by: tuple[tuple[str, str, tuple[PinSet, ...]], ...]
    # How the registry's tested fix (`requires`) fared: (base, mode, outcome) of cells pinning exactly it.
    fix_results: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class Derived:
    packages: tuple[str, ...]
    runs: tuple[str, ...]
    known_good: tuple[KnownGood, ...]
    no_pass: tuple[NoPass, ...]
    issues: tuple[IssueEvidence, ...]


def _place_key(base: str, mode: str) -> tuple[str, int, str]:
    return (base, _MODE_ORDER.get(mode, len(_MODE_ORDER)), mode)


def _pin_set(r: Record, order: tuple[str, ...]) -> PinSet:
    return PinSet(r.base, r.mode, tuple(evidence.ordered_pins(r.pins, order).items()), r.cell, r.run_id)


def _newest_first(records: Iterable[Record], order: tuple[str, ...]) -> list[Record]:
    # The cell id breaks ties (two include cells pinning the same versions of fewer packages).
    by_cell = sorted(records, key=lambda r: r.cell)
    return sorted(by_cell, key=lambda r: evidence.newest_key(r.pins, order), reverse=True)


def derive(records: Iterable[Record], registry: Registry, packages: Iterable[str] = ()) -> Derived:
    """What the records say: known-good pins per base · mode, and per issue."""
    cells = evidence.with_verdict(evidence.current(records))
    order = evidence.package_order(cells, packages)
    places: dict[tuple[str, str], list[Record]] = {}
    for r in cells:
        places.setdefault((r.base, r.mode), []).append(r)
    known: list[KnownGood] = []
    no_pass: list[NoPass] = []
    for base, mode in sorted(places, key=lambda p: _place_key(*p)):
        rs = places[(base, mode)]
        passing = _newest_first((r for r in rs if r.outcome is Outcome.PASS), order)
        if passing:
            known.append(KnownGood(_pin_set(passing[0], order), len(passing), len(rs)))
        else:
            no_pass.append(NoPass(base, mode, len(rs)))
    issues = []
    for issue in registry.issues:
        hits = sorted((r for r in cells if registry.match_record(r) == issue), key=lambda r: r.cell)
        hit_places = sorted({(r.base, r.mode) for r in hits}, key=lambda p: _place_key(*p))
        avoided = [
            (base, mode, tuple(_pin_set(r, order) for r in _newest_first(
                (r for r in places[(base, mode)] if r.outcome is Outcome.PASS), order)))
            for base, mode in hit_places
        ]
        fix = issue.requires_dict
        fix_results = sorted(
            ((r.base, r.mode, r.outcome.value) for r in cells if fix and evidence.exactly(r, fix)),
            key=lambda t: _place_key(t[0], t[1]),
        )
        issues.append(IssueEvidence(issue.name, tuple(r.cell for r in hits), tuple(avoided), tuple(fix_results)))
    runs = tuple(sorted({r.run_id for r in cells if r.run_id}))
    return Derived(order, runs, tuple(known), tuple(no_pass), tuple(issues))


def _pins_yaml(pins: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(pins)


def _pin_set_yaml(p: PinSet) -> dict[str, Any]:
    return {"base": p.base, "mode": p.mode, "pins": _pins_yaml(p.pins), "cell": p.cell,
            "run": p.run_id, "date": p.date}


def render(derived: Derived, today: dt.date | None = None) -> str:
    day = (today or dt.datetime.now(dt.timezone.utc).date()).isoformat()
    data: dict[str, Any] = {
        "generated": day,
        "runs": list(derived.runs),
        "packages": list(derived.packages),
        "known_good": [
            {**_pin_set_yaml(k.best), "passed": k.passed, "tested": k.tested} for k in derived.known_good
        ],
        "no_passing_cell": [{"base": n.base, "mode": n.mode, "tested": n.tested} for n in derived.no_pass],
        "issues": {
            i.name: {
                "hit_in": list(i.hit_in),
                "fix_results": [{"base": b, "mode": m, "outcome": o} for b, m, o in i.fix_results],
                "avoided_by": [
                    {"base": b, "mode": m, "runs": sorted({p.run_id for p in sets}),
                     "pins": [_pins_yaml(p.pins) for p in sets]}
                    for b, m, sets in i.avoided_by
                ],
            }
            for i in derived.issues
        },
    }
    header = (
        "# Written by compat-matrix from sweep records; do not edit: every sweep regenerates it.\n"
        "# Hand-written entries live in known-issues.yaml, which the tool never writes.\n"
        "# known_good: per base and mode, the newest pin set whose cell passed (warn does not count),\n"
        "#   with its run, the run's date, how many cells passed and how many were tested there.\n"
        "# issues: the cells that hit each issue, how its tested fix fared, and the passing pins\n"
        "#   on the same bases and modes.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=None)


def default_path(registry: Registry) -> Path:
    """known-good.yaml beside the registry file."""
    return (registry.path.parent if registry.path else Path("registry")) / FILE_NAME


def write(records: Iterable[Record], registry: Registry, path: Path | None = None,
          packages: Iterable[str] = (), today: dt.date | None = None) -> Path:
    target = path or default_path(registry)
    atomic_write(target, render(derive(records, registry, packages), today))
    return target


def load(path: Path) -> dict[str, Any] | None:
    """A known-good file read back (for the guard's "where it was seen"); None when absent."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
