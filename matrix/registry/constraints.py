"""Known-good pins as constraints files: what pip's `-c`, uv's `--constraint` / `UV_CONSTRAINT` read.

One file per base of the results (`<base>.txt`), or one per base and mode (`<base>-<mode>.txt`) where
the modes' newest passing pin sets differ. Each holds, in the shape of the per-Python constraints
files large projects publish:

- a header of comments: the base, the modes the pins passed in, and per mode the cell, run id, run
  date, as-of day, backend and base identity (the interpreter version and the base id the run saw);
- one `name==version` line per package of the newest passing pin set (`pass` only: a `warn` cell
  is not known-good, see knowngood.py);
- the known-bad combinations on that base as comments, each with its outcome and known issue.

Everything the file says comes from the records; the same records give the same bytes (no
"generated now" date: the dates are the runs'). A comment never spans a line (errors are
collapsed, URLs redacted), so no failure text can become a constraint.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrix import __version__
from matrix.errors import ConfigError, redact
from matrix.paths import atomic_write
from matrix.registry import Registry, collapse, evidence, knowngood
from matrix.registry.advisor import Advice
from matrix.store import Outcome, Record

_MODE_ORDER = {"together": 0, "layered": 1}
_ERROR_CHARS = 160


@dataclass(frozen=True)
class ConstraintsFile:
    name: str
    base: str
    modes: tuple[str, ...]
    pins: tuple[tuple[str, str], ...]
    text: str


@dataclass(frozen=True)
class Export:
    files: tuple[ConstraintsFile, ...]
    # (base, mode, cells tested there) where no cell passed: no pins to give.
    no_pass: tuple[tuple[str, str, int], ...]


def _line(text: str, limit: int = _ERROR_CHARS) -> str:
    flat = collapse(redact(text))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _spec(pins: Iterable[tuple[str, str]], sep: str = " ") -> str:
    return sep.join(f"{n}=={v}" for n, v in pins)


def _provenance(r: Record, passed: int, tested: int) -> list[str]:
    date = evidence.run_date(r.run_id) or "unknown"
    identity = ", ".join(x for x in (f"python {r.python}" if r.python else "", r.base_id, r.engine) if x)
    return [
        f"#   {r.mode}: cell {r.cell} ({passed} of {tested} cells passed on {r.base}·{r.mode})",
        f"#     run {r.run_id or 'unknown'}, date {date}, as-of {r.as_of or 'none (the index of that day)'}, "
        f"backend {r.backend}",
        f"#     base {r.base}: {identity or 'identity not recorded'}",
    ]


def _bad_lines(records: list[Record], registry: Registry, order: tuple[str, ...]) -> list[str]:
    """Known-bad combinations, newest first, one comment each (two with a known issue's fix). A
    no-wheel cell is not one (the pins may work where a wheel exists): no_wheel_lines says those."""
    bad = [r for r in records if r.outcome.is_incompatibility and r.outcome is not Outcome.NO_WHEEL]
    bad.sort(key=lambda r: r.cell)
    bad.sort(key=lambda r: (_MODE_ORDER.get(r.mode, len(_MODE_ORDER)), r.mode))
    bad.sort(key=lambda r: evidence.newest_key(r.pins, order), reverse=True)
    lines = []
    for r in bad:
        pins = _spec(evidence.ordered_pins(r.pins, order).items())
        issue = registry.match_record(r)
        what = f"known issue {issue.name}" if issue else _line(r.error) or "no error text"
        lines.append(f"#   {pins} ({r.mode}): {r.outcome.value}: {_line(what)}")
        if issue is not None:
            lines.append(f"#     fix: {_line(issue.solution)}")
    return lines


def _no_wheel_lines(records: list[Record], order: tuple[str, ...]) -> list[str]:
    sets = {_spec(evidence.ordered_pins(r.pins, order).items()): evidence.newest_key(r.pins, order)
            for r in records if r.outcome is Outcome.NO_WHEEL}
    return [f"#   {pins}" for pins in sorted(sets, key=lambda p: sets[p], reverse=True)]


def build(records: Iterable[Record], registry: Registry | None = None, *, base: str | None = None,
          packages: Iterable[str] = ()) -> Export:
    """The constraints files the records give (for one base, or every base). ConfigError when
    `base` names no base of the results."""
    reg = registry or Registry(None)
    cells = evidence.with_verdict(evidence.current(records))
    bases = sorted({r.base for r in cells})
    if base is not None and base not in bases:
        close = difflib.get_close_matches(base, bases, n=1)
        raise ConfigError("export constraints", "--base", f"no cell in the results ran on base {base!r}",
                          f"did you mean {close[0]!r}?" if close else f"the results have: {', '.join(bases) or 'none'}")
    derived = knowngood.derive(cells, reg, packages)
    by_cell = {r.cell: r for r in cells}
    files: list[ConstraintsFile] = []
    for b in [base] if base is not None else bases:
        known = [k for k in derived.known_good if k.best.base == b]
        if not known:
            continue
        distinct = {k.best.pins for k in known}
        groups = [known] if len(distinct) == 1 else [[k] for k in known]
        for group in groups:
            modes = tuple(k.best.mode for k in group)
            name = f"{b}.txt" if len(groups) == 1 else f"{b}-{modes[0]}.txt"
            pins = group[0].best.pins
            on_base = [r for r in cells if r.base == b and r.mode in modes]
            lines = [
                f"# Constraints for base {b}, install mode{'s' if len(modes) > 1 else ''} {', '.join(modes)}: "
                f"the newest pin set that passed there.",
                f"# Written by compat-matrix {__version__} from the sweep's records; do not edit: "
                "`compat-matrix export constraints` writes it again.",
                f"# Use: pip install -c {name} PACKAGE...  |  uv pip install -c {name} PACKAGE...  "
                f"|  UV_CONSTRAINT={name}",
                "# Evidence:",
            ]
            for k in group:
                lines += _provenance(by_cell[k.best.cell], k.passed, k.tested)
            others = [n for n in derived.no_pass if n.base == b]
            for n in others:
                lines.append(f"#   {n.mode}: no cell passed ({n.tested} tested): these pins are not evidence for it")
            lines += [f"{n}=={v}" for n, v in pins]
            bad = _bad_lines(on_base, reg, derived.packages)
            if bad:
                lines.append(f"# Known bad on {b} ({', '.join(modes)}): never install these together")
                lines += bad
            no_wheel = _no_wheel_lines(on_base, derived.packages)
            if no_wheel:
                lines.append(f"# No wheel for {b} (only_binary cells could not install these):")
                lines += no_wheel
            files.append(ConstraintsFile(name, b, modes, pins, "\n".join(lines) + "\n"))
    no_pass = tuple((n.base, n.mode, n.tested) for n in derived.no_pass if base is None or n.base == base)
    return Export(tuple(files), no_pass)


def write(export: Export, output: Path) -> list[Path]:
    """Each file into `output` (made if missing), each written whole with one rename."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(str(output), "--output", f"cannot be made a directory ({e.strerror or e})",
                          "name a directory that can be written") from None
    written = []
    for f in export.files:
        target = output / f.name
        try:
            atomic_write(target, f.text)
        except OSError as e:
            raise ConfigError(str(target), "--output", f"cannot be written ({e.strerror or e})",
                              "name a directory that can be written") from None
        written.append(target)
    return written


# `pins --format constraints|json`: the advisor's answer in the forms CI and pip read.

def advice_json(advice: Advice) -> str:
    """The advice as JSON (one object; stable keys), for CI to gate on."""
    def seen(s: Any) -> dict[str, Any]:
        return {"cell": s.cell, "base": s.base, "mode": s.mode, "partners": dict(s.partners),
                "outcome": s.outcome.value, "error": _line(s.error, 500),
                "issue": None if s.issue is None else {"name": s.issue.name, "cause": s.issue.cause,
                                                       "solution": s.issue.solution}}

    data = {
        "query": {"name": advice.query.name, "version": advice.query.version},
        "base": advice.base,
        "newest": advice.maximise,
        "cells": advice.cells,
        "runs": list(advice.runs),
        "passing": [{"partners": dict(p.pins), "where": [{"base": b, "mode": m} for b, m in p.where]}
                    for p in advice.passing],
        "warned": [seen(s) for s in advice.warned],
        "failing": [seen(s) for s in advice.failing],
        "untested": [{"axis": u.axis, "value": u.value, "where": [{"base": b, "mode": m} for b, m in u.where]}
                     for u in advice.untested],
        "tested_versions": list(advice.tested_versions),
    }
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def advice_constraints(advice: Advice) -> str | None:
    """The queried pin with its newest passing partners as a constraints file; None when nothing passed."""
    best = advice.best
    if best is None:
        return None
    on = f" on {advice.base}" if advice.base else ""
    lines = [
        f"# compat-matrix pins {advice.query}{on}: the newest partners that passed with it "
        f"({', '.join(f'{b}·{m}' for b, m in best.where)}; run {', '.join(advice.runs) or 'unknown'})",
        f"{advice.query.name}=={advice.query.version}",
        *(f"{n}=={v}" for n, v in best.pins),
    ]
    if advice.failing:
        lines.append(f"# Known bad with {advice.query}{on}:")
        for s in advice.failing:
            what = f"known issue {s.issue.name}" if s.issue else _line(s.error) or "no error text"
            lines.append(f"#   {_spec(s.partners)} ({s.base}·{s.mode}): {s.outcome.value}: {_line(what)}")
    return "\n".join(lines) + "\n"

