"""The evidence the registry tools reason over: the latest cell records, and how to look pins up in them.

The known-good file, the pin advisor and preflight all ask the same questions of records ("which
cells pinned these versions?", "which is newest?"); the answers live here so they agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from packaging.version import InvalidVersion, Version

from matrix.errors import ConfigError
from matrix.spec import canonical_name
from matrix.store import Outcome, Record, read_records

# What report.write leaves behind: the records behind the table.
RECORDS_FILE = "records.jsonl"
_RUN_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})T\d{6}Z")


def latest_records(results: Path) -> list[Record]:
    """The records behind the latest table in a results directory.

    results/records.jsonl is what the table shows; without it (a sweep interrupted before the
    table was written) the newest results/runs/<run id>.jsonl, run ids sorting by time.
    """
    candidates = [results / RECORDS_FILE]
    runs = results / "runs"
    if runs.is_dir():
        candidates += sorted(runs.glob("*.jsonl"), reverse=True)
    for path in candidates:
        if path.is_file():
            return read_records(path, "", "point --results at a directory `compat-matrix run` wrote")
    raise ConfigError(str(results), "", "holds no results (no records.jsonl, no runs/*.jsonl)",
                      "run `compat-matrix run` first, or point --results at its output directory")


def current(records: Iterable[Record]) -> list[Record]:
    """One record per cell: the latest run's, so a re-run cell replaces its old verdict."""
    best: dict[str, Record] = {}
    for r in records:
        if r.cell not in best or r.run_id >= best[r.cell].run_id:
            best[r.cell] = r
    return list(best.values())


def with_verdict(records: Iterable[Record]) -> list[Record]:
    """Records that are evidence about the combination as installs give it (an infra error says
    nothing about it; an override cell answers the bounds audit, bounds.py: no resolver would
    install its pins that way, so it is no known-good or known-bad install)."""
    return [r for r in records if r.outcome is not Outcome.INFRA_ERROR and r.mode != "override"]


def canon(name: str) -> str:
    return canonical_name(name)


def package_order(records: Iterable[Record], packages: Iterable[str] = ()) -> tuple[str, ...]:
    """Package names in matrix order: the given order first, then as the records pin them."""
    names: list[str] = []
    seen: set[str] = set()
    for name in [*packages, *(p for r in records for p in r.pins)]:
        if canon(name) not in seen:
            seen.add(canon(name))
            names.append(name)
    return tuple(names)


def version_key(text: str | None) -> tuple[int, Version | str]:
    """Sorts versions by PEP 440 (1.10.1 after 1.9.0); unparseable strings below, absent lowest."""
    if text is None:
        return (-1, "")
    try:
        return (1, Version(text))
    except InvalidVersion:
        return (0, text)


def same_version(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def pin_of(pins: dict[str, str], name: str) -> str | None:
    """The version a pin set gives a package, whatever spelling of its name either side uses."""
    key = canon(name)
    for n, v in pins.items():
        if canon(n) == key:
            return v
    return None


def agrees(record: Record, pins: dict[str, str]) -> bool:
    """The record pins every given package at the given version (it may pin others too)."""
    return all(same_version(pin_of(record.pins, n), v) for n, v in pins.items())


def exactly(record: Record, pins: dict[str, str]) -> bool:
    """The record pins exactly these packages at these versions."""
    return {canon(n) for n in record.pins} == {canon(n) for n in pins} and agrees(record, pins)


def newest_key(pins: dict[str, str], order: Iterable[str]) -> tuple[tuple[int, Version | str], ...]:
    """Sort key: compare the first package's version, then the next; use with reverse=True."""
    return tuple(version_key(pin_of(pins, n)) for n in order)


def ordered_pins(pins: dict[str, str], order: Iterable[str]) -> dict[str, str]:
    """The pins in matrix order, with the records' spelling of each name."""
    out = {}
    for n in order:
        v = pin_of(pins, n)
        if v is not None:
            out[n] = v
    for n, v in pins.items():
        if canon(n) not in {canon(o) for o in out}:
            out[n] = v
    return out


def describe(pins: dict[str, str]) -> str:
    return ", ".join(f"{n} {v}" for n, v in pins.items())


def run_date(run_id: str) -> str | None:
    """The UTC date a run started, read from its id (20261128T131343Z-8d9af3 → 2026-11-28)."""
    m = _RUN_DATE.match(run_id)
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else None
