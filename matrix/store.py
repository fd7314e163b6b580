"""Cell records and their outcomes: one record per cell, appended as cells finish, read back.

Records are the truth; tables are derived from them (report.py). The bottom layer: only paths.py
below it.
"""

from __future__ import annotations

import enum
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from matrix import collector
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
        return cls(**_known_fields(data))


# A record's fields, and its outcomes by name (Outcome(name) is a microsecond: seconds for a large merge).
_KNOWN = frozenset(Record.__dataclass_fields__)
_OUTCOMES = {o.value: o for o in Outcome}


def _known_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record read back: the record's keys (others ignored), its outcome an Outcome."""
    if type(data) is dict and data.keys() <= _KNOWN:
        known = dict(data)  # every key a field: copied whole rather than field by field
    else:
        known = {k: data[k] for k in Record.__dataclass_fields__ if k in data}
    name = data["outcome"]
    known["outcome"] = (_OUTCOMES.get(name) if type(name) is str else None) or Outcome(name)
    return known


# One encoder for every line: json.dumps with options makes a new one per call (0.1 s a 100 000).
_LINE = json.JSONEncoder(sort_keys=True)
# What record_line writes fast: the fields a record had when it was written, in _LINE's (sorted) order.
_FIELDS = ("as_of", "backend", "base", "base_id", "cached", "cell", "duration_s", "engine", "error", "installed",
           "matrix", "mode", "outcome", "pins", "python", "run_id")
_TEMPLATE = "{" + ", ".join(f'"{name}": %s' for name in _FIELDS) + "}\n"
_STR = json.encoder.encode_basestring_ascii
_FINITE = float.__repr__
# _LINE's C core made once, for the two dicts of a record (what _LINE.encode makes again per call).
_C = getattr(json.encoder, "c_make_encoder", None)
_DICT: Callable[[Any, int], Sequence[str]] = (
    _C(None, _LINE.default, _STR, None, ": ", ", ", True, False, True) if _C is not None
    else lambda value, _: [_LINE.encode(value)])
# Once Record has other fields than these, every line is _LINE's.
_FAST = tuple(sorted(Record.__dataclass_fields__)) == _FIELDS


def record_line(r: Record) -> str:
    """The record as one JSON line: _LINE.encode(r.serialize()) + "\\n", the same text in half the time.

    The fields go into a template through json's own C string encoder (which refuses anything that
    is not a str), the two dicts through json's C encoder. A field of another kind than the
    dataclass declares (a duration that is no finite float, a flag that is no bool) is left to json.
    """
    duration, cached, python = r.duration_s, r.cached, r.python
    if _FAST and type(r) is Record and type(duration) is float and duration - duration == 0.0 and type(cached) is bool:
        try:
            return _TEMPLATE % (
                _STR(r.as_of), _STR(r.backend), _STR(r.base), _STR(r.base_id), "true" if cached else "false",
                _STR(r.cell), _FINITE(duration), _STR(r.engine), _STR(r.error), "".join(_DICT(r.installed, 0)),
                _STR(r.matrix), _STR(r.mode), _STR(r.outcome.value), "".join(_DICT(r.pins, 0)),
                "null" if python is None else _STR(python), _STR(r.run_id))
        except (TypeError, ValueError, AttributeError, RecursionError):
            pass  # json says what it makes of it (or what is wrong with it)
    return _LINE.encode(r.serialize()) + "\n"


def records_jsonl(records: Iterable[Record]) -> str:
    """Records as the JSON lines load_records reads back."""
    return "".join(map(record_line, records))


class Lines:
    """Each record's JSON line, made once for every file that holds it.

    A write of the results puts the same records into the ledger, the table's records.jsonl and its
    history entry: encoding them is most of what those files cost (1 s for 100 000 records, each
    time). A record is known by identity, so only while the records are not changed: one write.
    """

    def __init__(self) -> None:
        self._made: dict[int, tuple[Record, str]] = {}

    def of(self, record: Record) -> str:
        made = self._made.get(id(record))
        if made is not None and made[0] is record:
            return made[1]
        line = record_line(record)
        self._made[id(record)] = (record, line)
        return line

    def chunks(self, records: Iterable[Record], lines: int = 2048, *, last: bool = False) -> Iterator[str]:
        """The records' lines, joined a few thousand at a time: a file is written without its whole
        text in memory (tens of megabytes for a large sweep), and without a write call a line.
        `last`: the records' last file, each line let go once it is in a piece."""
        of = self.of
        made = self._made
        batch: list[str] = []
        for r in records:
            batch.append(of(r))
            if last:
                del made[id(r)]
            if len(batch) == lines:
                yield "".join(batch)
                batch.clear()
        if batch:
            yield "".join(batch)


class RecordLog:
    """The run's records as JSON lines, one appended per finished cell (survives an interrupt)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")

    def append(self, *records: Record) -> None:
        for record in records:
            self._file.write(record_line(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# Fields whose values most records of a file share (the run, the base, the machine, the matrix): read
# back as one string each rather than one per record, tens of megabytes of a large ledger.
_SHARED = ("base", "mode", "backend", "run_id", "matrix", "engine", "base_id", "as_of", "python")
# What json.loads runs on a line, without its wrappers around it (a third of reading a large ledger).
# (An attribute the decoder sets, not in its declared interface.)
_SCAN: Callable[[str, int], tuple[Any, int]] = getattr(json.decoder.JSONDecoder(), "scan_once")  # noqa: B009


def load_records(path: Path) -> list[Record]:
    out = []
    shared: dict[str, str] = {}
    with collector.paused(), open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(_read_line(line, shared))
    return out


def _read_line(line: str, shared: dict[str, str]) -> Record:
    """Record.from_dict(json.loads(line)), with the strings of the _SHARED fields and the pins taken
    from `shared` where an earlier record had them."""
    data: Any = None
    if line[:1] == "{":  # what records.jsonl holds: an object, a newline
        try:
            data, end = _SCAN(line, 0)
            if line[end:] not in ("\n", ""):
                data = None
        except (StopIteration, ValueError):
            data = None
    if data is None:
        data = json.loads(line)  # leading or trailing space, or no JSON: json's answer and its error
    known = _known_fields(data)
    for name in _SHARED:
        value = known.get(name)
        if type(value) is str:
            known[name] = shared.setdefault(value, value)
    pins = known.get("pins")
    if type(pins) is dict:
        for name, value in pins.items():
            if type(value) is str:
                pins[name] = shared.setdefault(value, value)
    return Record(**known)


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
