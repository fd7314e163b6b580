"""The results directory as a ledger: every cell's latest verdict, kept until that cell gets a newer one.

A run (any `--select`, one shard, an interrupted run) updates only the cells it finished; every
other cell keeps its verdict and its provenance (run id, backend, base identity, as-of). An
infra-error is no verdict: it never replaces one, and stands in the ledger only for a cell that has
no verdict yet (so `--resume` runs it again). The table is the ledger ∩ the current matrix; cells of
the matrix without a record are "not run"; cells no longer in the matrix leave the table but stay in
the ledger (and in history).

`results/ledger.jsonl` is written whole with one rename, before anything derived from it: a crash at
any point leaves the old ledger or the new one, never a mix, and the table is derived from it again
by the next run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from matrix.cells import Cell
from matrix.paths import atomic_write
from matrix.spec import Spec
from matrix.store import Lines, Outcome, Record, read_records

LEDGER_FILE = "ledger.jsonl"
# The records behind the table: what pins, preflight, guard and --resume read.
TABLE_RECORDS = "records.jsonl"


def matrix_digest(spec: Spec) -> str:
    """What makes two sets of results parts of one matrix: the expanded matrix file's content (its
    bases, axes, modes, filters, install options, limits, and the as-of day), not where it lies nor
    which CA bundle vouches for the index."""
    data = asdict(spec)
    data.pop("path", None)
    data.pop("queries", None)  # expanded into `packages` already
    data.get("install", {}).pop("ca_bundle", None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read(path: Path, what: str) -> list[Record]:
    """Records from a JSON-lines file of a results directory; an unreadable one is bad input naming it."""
    return read_records(path, what, "restore it from results/history/, or move it aside to start this "
                                    "directory afresh")


@dataclass
class Update:
    """What a run's records did to the ledger."""

    changed: list[Record]
    # New infra-errors on cells that keep an older verdict (the verdict stands; the run failed there).
    kept_over_infra: list[Record]


class Ledger:
    def __init__(self, results: Path, records: Iterable[Record] = ()) -> None:
        self.results = results
        self.records: dict[str, Record] = {r.cell: r for r in records}

    @classmethod
    def load(cls, results: Path) -> Ledger:
        """The ledger of a results directory; one written before the ledger existed is read from its
        table's records; none at all is empty."""
        for name in (LEDGER_FILE, TABLE_RECORDS):
            path = results / name
            if path.is_file():
                return cls(results, read(path, "ledger"))
        return cls(results)

    def get(self, cell: str) -> Record | None:
        return self.records.get(cell)

    def update(self, records: Iterable[Record]) -> Update:
        """Take a run's records: a verdict replaces what the cell had; an infra-error only stands
        where the cell has no verdict."""
        out = Update([], [])
        for r in records:
            was = self.records.get(r.cell)
            if (r.outcome is Outcome.INFRA_ERROR and was is not None
                    and was.outcome is not Outcome.INFRA_ERROR):
                out.kept_over_infra.append(r)
                continue
            self.records[r.cell] = r
            out.changed.append(r)
        return out

    def table(self, cells: Iterable[Cell]) -> tuple[list[Record], list[Cell]]:
        """The ledger ∩ the matrix in the matrix's order, and the cells of the matrix it has no
        record for."""
        have: list[Record] = []
        missing: list[Cell] = []
        for c in cells:
            r = self.records.get(c.id)
            if r is None:
                missing.append(c)
            else:
                have.append(r)
        return have, missing

    def save(self, lines: Lines | None = None) -> Path:
        """All of it in one rename (records sorted by cell id: the same ledger gives the same bytes).
        `lines`: the records' lines, kept for the files written from the same records next."""
        path = self.results / LEDGER_FILE
        atomic_write(path, (lines or Lines()).chunks(self.records[k] for k in sorted(self.records)))
        return path
