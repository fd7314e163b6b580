"""Cell records and their outcomes: one record per cell, appended as cells finish, read back.

Records are the truth; tables are derived from them (report.py). The bottom layer: only paths.py
below it.
"""

from __future__ import annotations

import enum
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from matrix.errors import ConfigError


class Outcome(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    IMPORT_ERROR = "import-error"
    CRASH = "crash"
    TIMEOUT = "timeout"
    RESOLVE_CONFLICT = "resolve-conflict"
    NO_WHEEL = "no-wheel"
    BUILD_ERROR = "build-error"
    INFRA_ERROR = "infra-error"
    # A cell of the matrix that has no record yet: a row of the table, never a record's outcome.
    NOT_RUN = "not-run"

    def __str__(self) -> str:
        return self.value

    @property
    def is_incompatibility(self) -> bool:
        """Evidence against the combination (infra errors never are)."""
        return self not in (Outcome.PASS, Outcome.WARN, Outcome.INFRA_ERROR, Outcome.NOT_RUN)


class CellLike(Protocol):
    """What a record needs of a planned cell (cells.Cell)."""

    @property
    def id(self) -> str: ...
    @property
    def base(self) -> str: ...
    @property
    def mode(self) -> str: ...

    @property
    def pin_dict(self) -> dict[str, str]: ...


@dataclass
class Record:
    cell: str
    base: str
    mode: str
    pins: dict[str, str]
    outcome: Outcome
    error: str = ""
    installed: dict[str, str | None] = field(default_factory=dict)
    duration_s: float = 0.0
    backend: str = "docker"
    python: str | None = None
    run_id: str = ""
    # Where it ran: the engine (a remote DOCKER_HOST shows here) or the host interpreter.
    engine: str = ""
    # What the base was when the cell ran (image id, interpreter version): a kept verdict is
    # only reused while it is the same, so a base that moves gets its cells run again.
    base_id: str = ""
    # Read from the result cache (resultcache.py) rather than run: run_id names the run that ran it.
    cached: bool = False
    # The day the run took the world as of (--as-of: axes and every install), "" for today.
    as_of: str = ""
    # The digest of the matrix the cell was planned from (ledger.matrix_digest): a merge refuses
    # records of two matrices.
    matrix: str = ""

    @classmethod
    def for_cell(cls, cell: CellLike, *, backend: str, run_id: str, **fields: Any) -> Record:
        """A cell's record, an infra-error until the backend says otherwise."""
        fields.setdefault("outcome", Outcome.INFRA_ERROR)
        return cls(cell=cell.id, base=cell.base, mode=cell.mode, pins=cell.pin_dict, backend=backend,
                   run_id=run_id, **fields)

    def serialize(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict: asdict deep-copies, 3 s for 100 000 records.
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["outcome"] = self.outcome.value
        out["pins"], out["installed"] = dict(self.pins), dict(self.installed)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["outcome"] = Outcome(data["outcome"])
        return cls(**known)


# One encoder for every line: json.dumps with options makes a new one per call (0.1 s a 100 000).
_LINE = json.JSONEncoder(sort_keys=True)


def records_jsonl(records: list[Record]) -> str:
    """Records as the JSON lines load_records reads back."""
    return "".join(_LINE.encode(r.serialize()) + "\n" for r in records)


class RecordLog:
    """The run's records as JSON lines, one appended per finished cell (survives an interrupt)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")

    def append(self, *records: Record) -> None:
        for record in records:
            self._file.write(_LINE.encode(record.serialize()) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def load_records(path: Path) -> list[Record]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(Record.from_dict(json.loads(line)))
    return out


# What reading records can fail with: the file (OSError), its JSON or an outcome's name
# (ValueError), a field missing or of another kind (KeyError, TypeError).
UNREADABLE = (OSError, ValueError, KeyError, TypeError)


def read_records(path: Path, key: str, fix: str) -> list[Record]:
    """load_records, an unreadable file being bad input that names it (the key and fix as given)."""
    try:
        return load_records(path)
    except UNREADABLE as e:
        raise ConfigError(str(path), key, f"not a records file ({type(e).__name__}: {e})", fix) from None


def summary(records: list[Record]) -> str:
    """"3 pass, 1 import-error": the outcomes of some records, in the taxonomy's order."""
    counts = Counter(r.outcome for r in records)
    return ", ".join(f"{counts[o]} {o.value}" for o in Outcome if counts[o]) or "no cells"
