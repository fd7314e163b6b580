"""What changed between two sets of cell records: new and gone cells, fixes, regressions.

A regression is a cell with the same pins that had a working verdict (pass, warn) and now has
an incompatibility: a base image moved under it, say. Infra errors are no verdict, so they never
make or break a regression; they are listed apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from matrix.errors import ConfigError
from matrix.paths import atomic_write
from matrix.store import Lines, Outcome, Record, read_records

_WORKS = (Outcome.PASS, Outcome.WARN)


@dataclass
class Diff:
    new: list[Record] = field(default_factory=list)
    gone: list[Record] = field(default_factory=list)
    fixed: list[tuple[Record, Record]] = field(default_factory=list)
    regressions: list[tuple[Record, Record]] = field(default_factory=list)
    changed: list[tuple[Record, Record]] = field(default_factory=list)
    no_verdict: list[tuple[Record, Record]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.new or self.gone or self.fixed or self.regressions or self.changed or self.no_verdict)


def diff(before: list[Record], after: list[Record]) -> Diff:
    old = {r.cell: r for r in before}
    out = Diff()
    for r in after:
        was = old.pop(r.cell, None)
        if was is None:
            out.new.append(r)
        elif was.outcome is r.outcome:
            continue
        elif Outcome.INFRA_ERROR in (was.outcome, r.outcome):
            out.no_verdict.append((was, r))
        elif was.outcome in _WORKS and r.outcome.is_incompatibility:
            out.regressions.append((was, r))
        elif was.outcome.is_incompatibility and r.outcome in _WORKS:
            out.fixed.append((was, r))
        else:
            out.changed.append((was, r))
    out.gone = list(old.values())
    return out


def format_diff(d: Diff, markdown: bool = False) -> str:
    """Lines for the terminal, or a Markdown list for the report."""
    bullet = "- " if markdown else "  "
    code = "`" if markdown else ""
    out: list[str] = []

    def section(title: str, items: list[str]) -> None:
        if items:
            out.append(f"{title} ({len(items)}):")
            out.extend(f"{bullet}{item}" for item in items)

    def pair(a: Record, b: Record) -> str:
        tail = f" — {b.error[:200]}" if b.error and b.outcome is not Outcome.PASS else ""
        return f"{code}{b.cell}{code}: {a.outcome.value} → {b.outcome.value}{tail}"

    section("regressions", [pair(a, b) for a, b in d.regressions])
    section("fixed", [pair(a, b) for a, b in d.fixed])
    section("changed", [pair(a, b) for a, b in d.changed])
    section("no verdict in one of the two (infra-error)", [pair(a, b) for a, b in d.no_verdict])
    section("new cells", [f"{code}{r.cell}{code}: {r.outcome.value}" for r in d.new])
    section("cells no longer in the matrix", [f"{code}{r.cell}{code}" for r in d.gone])
    return "\n".join(out) + "\n" if out else "no change\n"


def keep(records: list[Record], results: Path, run_id: str, lines: Lines | None = None) -> Path:
    """The whole table of a finished run, kept as results/history/<run id>.jsonl: what diff and
    the next sweep compare against (runs/<id>.jsonl holds only the cells that run ran). `lines`:
    the records' lines where the ledger and the table were just written from them."""
    path = results / "history" / f"{run_id}.jsonl"
    atomic_write(path, (lines or Lines()).chunks(records))
    return path


def load_run(ref: str, results: Path) -> list[Record]:
    """A run's records: a run id (results/history/ or results/runs/<id>.jsonl) or a records file."""
    candidates = [Path(ref), results / "history" / f"{ref}.jsonl", results / "runs" / f"{ref}.jsonl"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ConfigError(ref, "RUN", "no such run",
                          f"give a run id from {results / 'runs'} or the path of a records .jsonl file")
    return read_records(path, "RUN", "give a records .jsonl file")
