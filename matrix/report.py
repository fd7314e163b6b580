"""Derives the compatibility table from cell records: pandas, then CSV and Markdown (tabulate)."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import tabulate
from packaging.version import Version

from matrix import collector, exports
from matrix.cells import Cell
from matrix.paths import atomic_write
from matrix.store import Lines, Outcome, Record

SYMBOLS = {
    Outcome.PASS: "✅",
    Outcome.WARN: "⚠️",
    Outcome.IMPORT_ERROR: "❌",
    Outcome.CRASH: "💥",
    Outcome.TIMEOUT: "⏱️",
    Outcome.RESOLVE_CONFLICT: "⛔",
    Outcome.NO_WHEEL: "🚫",
    Outcome.BUILD_ERROR: "🔧",
    Outcome.INFRA_ERROR: "❓",
    Outcome.NOT_RUN: "⬜",
}
MEANINGS = {
    Outcome.PASS: "every probe passed",
    Outcome.WARN: "passed, but a probe printed a warning that signals trouble",
    Outcome.IMPORT_ERROR: "a probe raised (e.g. numpy.dtype size changed)",
    Outcome.CRASH: "a probe died on a signal, or ran out of memory",
    Outcome.TIMEOUT: "a probe outran its time limit",
    Outcome.RESOLVE_CONFLICT: "the installer refused the pins from declared metadata",
    Outcome.NO_WHEEL: "no binary for this Python/platform",
    Outcome.BUILD_ERROR: "any other install or build failure",
    Outcome.INFRA_ERROR: "the tool's world failed (engine, network, disk): no verdict",
    Outcome.NOT_RUN: "a cell of the matrix with no record yet (`run --resume` runs it)",
}
# A place of the grid that is no cell of the matrix (excluded, or not in the product).
NO_CELL = "·"


@dataclass(frozen=True)
class Annotations:
    """What the known-issue registry says about a table's cells (made by matrix.registry.annotate):
    the issue each failing cell hit, each issue's fix, and entries to paste for the failures no entry
    matches. The table only shows them: it knows no registry."""

    issues: dict[str, str] = field(default_factory=dict)  # cell id → issue name
    fixes: dict[str, str] = field(default_factory=dict)  # issue name → its solution
    new_entries: list[str] = field(default_factory=list)  # YAML entries to paste
    registry_path: str = "the registry"


def packages_of(records: list[Record], packages: tuple[str, ...] = ()) -> list[str]:
    """The package columns: the given order first, then any others the records pin."""
    names = list(packages)
    seen = set(names)
    for r in records:
        if not r.pins.keys() <= seen:  # most records pin nothing new: one set comparison each
            names += [p for p in r.pins if p not in seen]
            seen.update(r.pins)
    return names


def table(records: list[Record], packages: tuple[str, ...] = (), notes: Annotations | None = None) -> pd.DataFrame:
    """One row per cell; `issue` names the registry entry a failing cell hit."""
    names = packages_of(records, packages)
    hits = notes.issues if notes is not None else {}
    columns = ["cell", "base", "mode", *names, "outcome", "error", "issue",
               *(f"installed_{p}" for p in names), "duration_s", "backend", "python", "engine"]
    if len(set(columns)) < len(columns):  # a package named like a column: one dict per row decides
        return pd.DataFrame([_row(r, names, hits) for r in records], columns=columns)
    # Column by column: building a dict per row is most of the time for a large sweep.
    data: dict[str, list[object]] = {
        "cell": [r.cell for r in records], "base": [r.base for r in records], "mode": [r.mode for r in records]}
    data.update({p: [r.pins.get(p, "") for r in records] for p in names})
    data["outcome"] = [r.outcome.value for r in records]
    data["error"] = [r.error for r in records]
    data["issue"] = [hits.get(r.cell, "") for r in records]
    data.update({f"installed_{p}": [r.installed.get(p) or "" for r in records] for p in names})
    data["duration_s"] = [r.duration_s for r in records]
    data["backend"] = [r.backend for r in records]
    data["python"] = [r.python or "" for r in records]
    data["engine"] = [r.engine for r in records]
    if not records:
        return pd.DataFrame([], columns=columns)
    return pd.DataFrame(data, columns=columns)


def _row(r: Record, names: list[str], hits: dict[str, str]) -> dict[str, object]:
    row: dict[str, object] = {"cell": r.cell, "base": r.base, "mode": r.mode}
    row.update({p: r.pins.get(p, "") for p in names})
    row.update({"outcome": r.outcome.value, "error": r.error,
                "issue": hits.get(r.cell, "")})
    row.update({f"installed_{p}": r.installed.get(p) or "" for p in names})
    row.update({"duration_s": r.duration_s, "backend": r.backend, "python": r.python or "",
                "engine": r.engine})
    return row


@functools.lru_cache(maxsize=65536)
def _version_key(text: str) -> tuple[int, Version | str]:
    try:
        return (0, Version(text))
    except ValueError:
        return (1, text)


def pivot(df: pd.DataFrame, names: list[str], labels: list[str] | None = None) -> pd.DataFrame:
    """Pins down the side, base · mode across the top, one symbol per cell (the first row's, where
    rows share both), "·" where no row is. `labels`: exports.pin_labels(df, names) when the caller
    has them.

    Laid out with dicts rather than pandas' pivot_table on a copy of the table (half a second for
    100 000 rows); the rows are sorted by pandas as they were, from each label's first row.
    """
    if df.empty:
        return pd.DataFrame()
    if labels is None:
        labels = exports.pin_labels(df, names)
    where = exports.where_labels(df)
    symbols = {o.value: SYMBOLS[o] for o in Outcome}
    first: dict[tuple[str, str], str] = {}
    for key, outcome in zip(zip(labels, where, strict=True), df["outcome"].tolist(), strict=True):
        symbol = symbols.get(outcome)
        if symbol is not None and key not in first:
            first[key] = symbol
    rows: dict[str, int] = {}  # each label's first row
    for i, label in enumerate(labels):
        rows.setdefault(label, i)
    at = list(rows.values())
    firsts = pd.DataFrame({**{n: df[n].iloc[at].tolist() for n in names}, "pins": list(rows)}, index=at)
    order = firsts.sort_values(by=names, key=lambda col: col.map(_version_key))["pins"].tolist()
    columns = list(dict.fromkeys(where))
    return pd.DataFrame({w: [first.get((label, w), NO_CELL) for label in order] for w in columns},
                        index=pd.Index(order, name="pins"), columns=pd.Index(columns, name="where"))


def markdown(df: pd.DataFrame, names: list[str], notes: Annotations | None = None, changes: str | None = None,
             title: str = "Compatibility matrix", grid: pd.DataFrame | None = None,
             about: list[str] | None = None, sections: list[str] | None = None) -> str:
    """The table as Markdown; `grid` is pivot(df, names) when the caller already has it; `about`:
    lines under the title (where the verdicts come from, a partial merge)."""
    out = [f"# {title}", ""]
    if about:
        out += [*about, ""]
    counts = Counter(df["outcome"].tolist()) if not df.empty else Counter()
    out.append(", ".join(f"{SYMBOLS[o]} {o.value}: {counts[o.value]}" for o in Outcome if counts[o.value])
               or "No cells ran.")
    out.append("")
    if grid is None:
        grid = pivot(df, names)
    if not grid.empty:
        out.append(github_table(grid, index=True))
        out.append("")
    if changes is not None:
        out += ["## Changed since the last run", "", changes.rstrip(), ""]
    failing = df[~df["outcome"].isin([Outcome.PASS.value, Outcome.NOT_RUN.value])] if not df.empty else df
    if not failing.empty:
        out += ["## Cells that did not pass", ""]
        details = failing[["cell", "outcome", "error", "issue"]].copy()
        details["error"] = details["error"].map(lambda e: _one_line(e, 240))
        if notes is not None:
            # The fix next to the failure: what the seed's KNOWN_ISSUES list was for.
            fixes = {name: _one_line(notes.fixes.get(name, ""), 120) for name in dict.fromkeys(details["issue"])}
            details["fix"] = details["issue"].map(fixes)
        else:
            details = details.drop(columns="issue")
        out.append(github_table(details, index=False))
        out.append("")
    if notes is not None and notes.new_entries:
        out += ["## New failures (no registry entry matches)", "",
                f"Paste an entry into {notes.registry_path} once the cause and the fix are known:", ""]
        for entry in notes.new_entries:
            out += ["```yaml", entry.rstrip(), "```", ""]
    for section in sections or []:
        out += [section.rstrip(), ""]
    out += ["## Legend", ""]
    legend = pd.DataFrame([{"": SYMBOLS[o], "outcome": o.value, "meaning": MEANINGS[o]} for o in Outcome]
                          + [{"": NO_CELL, "outcome": "no cell", "meaning": "not a cell of the matrix (excluded)"}])
    out.append(github_table(legend, index=False))
    return "\n".join(out) + "\n"


# Characters that send tabulate down its slower paths (ANSI codes, line breaks, its separator marker).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What tabulate might read as a number (1,234.5): such a column is aligned as numbers.
_NUMBERISH = re.compile(r"[-+0-9,.]*")


def github_table(df: pd.DataFrame, index: bool) -> str:
    """df.to_markdown(index=index, tablefmt="github"), the same text, in a fraction of the time.

    tabulate sniffs the type of every cell and measures every cell's width with wcwidth: seconds for
    the tens of thousands of rows of a large sweep. Tables of text (all of this report's) are laid
    out here the way tabulate lays them out; anything else is handed to tabulate.
    """
    text = _github_text_table(df, index)
    return text if text is not None else df.to_markdown(index=index, tablefmt="github")


def _plainly_text(value: str) -> bool:
    """True when tabulate reads the value as text, not as a number, a boolean or a blank."""
    if not value or value in ("True", "False") or _NUMBERISH.fullmatch(value):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def _github_text_table(df: pd.DataFrame, index: bool) -> str | None:
    """The github table when every header and cell is single-line text, else None."""
    if df.empty or tabulate.PRESERVE_WHITESPACE:
        return None
    columns = [df.iloc[:, i].tolist() for i in range(df.shape[1])]
    keys = list(df.columns)
    if index:
        if df.index.name is None or isinstance(df.index.name, list):
            return None
        keys.insert(0, df.index.name)
        columns.insert(0, df.index.tolist())
    headers = [str(k) for k in keys]
    for values in columns:
        if any(type(v) is not str for v in values):
            return None
        # tabulate's column type is the most general of its cells': one cell of text makes it text;
        # blanks and True/False are laid out as text too.
        if not any(_plainly_text(v) for v in values) and not all(v in ("", "True", "False") for v in values):
            return None
    if _CONTROL.search("".join(headers)) or any(_CONTROL.search("".join(values)) for values in columns):
        return None
    wide = getattr(tabulate, "wcwidth", None)
    measure = wide.wcswidth if wide is not None and tabulate.WIDE_CHARS_MODE else len
    widths_seen: dict[str, int] = {}

    def width(s: str) -> int:
        if s.isascii():  # printable ASCII (no control characters here): one column each
            return len(s)
        w = widths_seen.get(s)
        if w is None:
            w = widths_seen[s] = measure(s)
        return w

    padded_columns = []
    colwidths = []
    for header, values in zip(headers, columns, strict=True):
        cells = [v.strip() for v in values]
        cell_widths = [width(c) for c in cells]
        header_width = width(header)
        if header_width < 0 or min(cell_widths) < 0:
            return None
        colwidth = max(max(cell_widths), header_width + tabulate.MIN_PADDING)
        padded_columns.append([c.ljust(colwidth - w + len(c)) for c, w in zip(cells, cell_widths, strict=True)])
        colwidths.append(colwidth)
    head = [h.ljust(w + len(h) - width(h)) for h, w in zip(headers, colwidths, strict=True)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("-" * (w + 2) for w in colwidths) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*padded_columns, strict=True)]
    return "\n".join(lines)


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def not_run_rows(cells: list[Cell]) -> list[Record]:
    """The table's rows for cells of the matrix that have no record (never written as records)."""
    return [Record.for_cell(c, backend="", run_id="", outcome=Outcome.NOT_RUN) for c in cells]


def write(records: list[Record], results_dir: Path, packages: tuple[str, ...] = (),
          notes: Annotations | None = None, changes: str | None = None, *,
          not_run: list[Cell] | None = None, about: list[str] | None = None,
          sections: list[str] | None = None, lines: Lines | None = None) -> list[Path]:
    """The table and the records behind it (records.jsonl: what the registry and advisor read).
    `not_run`: cells of the matrix without a record, rows of the table with their own symbol;
    `lines`: the records' lines where the ledger and the history entry were just written from them
    (records.jsonl is their last file: they are let go as it is written).

    Each file is written as soon as it is made, and let go: a large sweep's six texts (and what
    each is made from) are never in memory together."""
    with collector.paused():
        return _write(records, results_dir, packages, notes, changes, not_run, about, sections, lines)


def _write(records: list[Record], results_dir: Path, packages: tuple[str, ...], notes: Annotations | None,
           changes: str | None, not_run: list[Cell] | None, about: list[str] | None, sections: list[str] | None,
           lines: Lines | None) -> list[Path]:
    rows = records + not_run_rows(not_run or []) if not_run else records
    names = packages_of(rows, packages)
    df = table(rows, packages, notes)
    labels = exports.pin_labels(df, names)
    grid = pivot(df, names, labels)
    outputs: dict[str, Callable[[], str | Iterable[str]]] = {
        "records.jsonl": lambda: (lines or Lines()).chunks(records, last=True),
        "matrix.csv": lambda: df.to_csv(index=False),
        "matrix.md": lambda: markdown(df, names, notes, changes, grid=grid, about=about, sections=sections),
        "matrix.html": lambda: exports.html(df, names, grid, labels=labels),
        "junit.xml": lambda: exports.junit(df),
        "matrix.json": lambda: exports.json_pieces(df),
    }
    for name, make in outputs.items():
        atomic_write(results_dir / name, make())
    return [results_dir / name for name in outputs]


