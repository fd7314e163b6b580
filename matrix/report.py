"""Derives the compatibility table from cell records: pandas, then CSV and Markdown (tabulate)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
from packaging.version import Version

from matrix import exports
from matrix.classify import Outcome
from matrix.registry import Registry, group_unmatched, suggest_entry
from matrix.store import Record, atomic_write, records_jsonl

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
}
NOT_RUN = "·"


def packages_of(records: list[Record], packages: tuple[str, ...] = ()) -> list[str]:
    """The package columns: the given order first, then any others the records pin."""
    names = list(packages)
    for r in records:
        names += [p for p in r.pins if p not in names]
    return names


def table(records: list[Record], packages: tuple[str, ...] = (), registry: Registry | None = None) -> pd.DataFrame:
    """One row per cell; `issue` names the registry entry a failing cell hit."""
    names = packages_of(records, packages)
    hits = registry.matches(records) if registry else {}
    rows = []
    for r in records:
        row: dict[str, object] = {"cell": r.cell, "base": r.base, "mode": r.mode}
        row.update({p: r.pins.get(p, "") for p in names})
        row.update({"outcome": r.outcome.value, "error": r.error,
                    "issue": hits[r.cell].name if r.cell in hits else ""})
        row.update({f"installed_{p}": r.installed.get(p) or "" for p in names})
        row.update({"duration_s": r.duration_s, "backend": r.backend, "python": r.python or "",
                    "engine": r.engine})
        rows.append(row)
    columns = ["cell", "base", "mode", *names, "outcome", "error", "issue",
               *(f"installed_{p}" for p in names), "duration_s", "backend", "python", "engine"]
    return pd.DataFrame(rows, columns=columns)


def _version_key(text: str) -> tuple[int, Version | str]:
    try:
        return (0, Version(text))
    except ValueError:
        return (1, text)


def pivot(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Pins down the side, base · mode across the top, one symbol per cell."""
    if df.empty:
        return pd.DataFrame()
    work = df.copy()
    work["pins"] = work[names].apply(
        lambda row: ", ".join(f"{n} {row[n]}" for n in names if row[n]), axis=1)
    work["where"] = work["base"] + " · " + work["mode"]
    work["symbol"] = work["outcome"].map(lambda o: SYMBOLS[Outcome(o)])
    grid = work.pivot_table(index="pins", columns="where", values="symbol", aggfunc="first")
    order = (work.drop_duplicates("pins")
             .sort_values(by=names, key=lambda col: col.map(_version_key))["pins"])
    grid = grid.reindex(index=list(order), columns=list(dict.fromkeys(work["where"])))
    return grid.fillna(NOT_RUN)


def markdown(df: pd.DataFrame, names: list[str], registry: Registry | None = None,
             records: list[Record] | None = None, changes: str | None = None,
             title: str = "Compatibility matrix") -> str:
    out = [f"# {title}", ""]
    counts = Counter(df["outcome"]) if not df.empty else Counter()
    out.append(", ".join(f"{SYMBOLS[o]} {o.value}: {counts[o.value]}" for o in Outcome if counts[o.value])
               or "No cells ran.")
    out.append("")
    grid = pivot(df, names)
    if not grid.empty:
        out.append(grid.to_markdown(tablefmt="github"))
        out.append("")
    if changes is not None:
        out += ["## Changed since the last run", "", changes.rstrip(), ""]
    failing = df[~df["outcome"].isin([Outcome.PASS.value])] if not df.empty else df
    if not failing.empty:
        out += ["## Cells that did not pass", ""]
        details = failing[["cell", "outcome", "error", "issue"]].copy()
        details["error"] = details["error"].map(lambda e: _one_line(e, 240))
        if registry is not None:
            # The fix next to the failure: what the seed's KNOWN_ISSUES list was for.
            details["fix"] = details["issue"].map(
                lambda name: _one_line(registry.get(name).solution, 120) if registry.get(name) else "")
        else:
            details = details.drop(columns="issue")
        out.append(details.to_markdown(index=False, tablefmt="github"))
        out.append("")
    if registry is not None and records:
        groups = group_unmatched(records, registry)
        if groups:
            out += ["## New failures (no registry entry matches)", "",
                    f"Paste an entry into {registry.path or 'the registry'} once the cause and the fix are known:", ""]
            for g in groups:
                out += ["```yaml", suggest_entry(g, registry).rstrip(), "```", ""]
    out += ["## Legend", ""]
    legend = pd.DataFrame([{"": SYMBOLS[o], "outcome": o.value, "meaning": MEANINGS[o]} for o in Outcome]
                          + [{"": NOT_RUN, "outcome": "not run", "meaning": "excluded, or not selected"}])
    out.append(legend.to_markdown(index=False, tablefmt="github"))
    return "\n".join(out) + "\n"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write(records: list[Record], results_dir: Path, packages: tuple[str, ...] = (),
          registry: Registry | None = None, changes: str | None = None) -> list[Path]:
    """The table and the records behind it (records.jsonl: what the registry and advisor read)."""
    names = packages_of(records, packages)
    df = table(records, packages, registry)
    outputs = {
        "records.jsonl": records_jsonl(records),
        "matrix.csv": df.to_csv(index=False),
        "matrix.md": markdown(df, names, registry, records, changes),
        "matrix.html": exports.html(df, names, pivot(df, names)),
        "junit.xml": exports.junit(df),
        "matrix.json": exports.as_json(df),
    }
    for name, text in outputs.items():
        atomic_write(results_dir / name, text)
    return [results_dir / name for name in outputs]


def summary(records: list[Record]) -> str:
    counts = Counter(r.outcome for r in records)
    return ", ".join(f"{counts[o]} {o.value}" for o in Outcome if counts[o]) or "no cells"
