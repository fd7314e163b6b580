"""The table in the forms other tools render: an HTML heatmap, JUnit XML for CI systems, JSON.

All three are derived from the same DataFrame report.table() builds, never from logs.
"""

from __future__ import annotations

import html as htmllib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any
from xml.sax.saxutils import escape

import pandas as pd

from matrix.store import Outcome

# Green for evidence that works, amber for a warning, reds for incompatibilities, grey for no
# verdict: colour-blind readers still get the symbol in each cell.
COLOURS = {
    Outcome.PASS: "#b7e1a1",
    Outcome.WARN: "#ffe08a",
    Outcome.IMPORT_ERROR: "#f4a09c",
    Outcome.CRASH: "#e06666",
    Outcome.TIMEOUT: "#f6b26b",
    Outcome.RESOLVE_CONFLICT: "#d5a6bd",
    Outcome.NO_WHEEL: "#cfe2f3",
    Outcome.BUILD_ERROR: "#ea9999",
    Outcome.INFRA_ERROR: "#d9d9d9",
    Outcome.NOT_RUN: "#ffffff",
}


# Words, not the Markdown's emoji: a browser without an emoji font shows boxes.
LABELS = {
    Outcome.PASS: "pass", Outcome.WARN: "warn", Outcome.IMPORT_ERROR: "import", Outcome.CRASH: "crash",
    Outcome.TIMEOUT: "timeout", Outcome.RESOLVE_CONFLICT: "conflict", Outcome.NO_WHEEL: "no wheel",
    Outcome.BUILD_ERROR: "build", Outcome.INFRA_ERROR: "infra", Outcome.NOT_RUN: "not run",
}


# Above this many grid cells the heatmap is written as plain HTML rather than through pandas'
# Styler, which spends seconds on a large sweep and writes two CSS rules per cell for its tooltips
# (a page of tens of megabytes a browser is slow to open). Below it, the page is as it always was.
STYLER_MAX_CELLS = 10_000


def pin_labels(df: pd.DataFrame, names: list[str]) -> list[str]:
    """Each row's pins as the table's row label: "numpy 1.26.4, scipy 1.11.4" (blank pins left out)."""
    if not names:
        return [""] * len(df)
    columns = [df[n].tolist() for n in names]
    return [", ".join(f"{n} {v}" for n, v in zip(names, pins, strict=True) if v)
            for pins in zip(*columns, strict=True)]


def where_labels(df: pd.DataFrame) -> list[str]:
    """Each row's column of the grid: "bookworm-py311 · layered"."""
    return [f"{base} · {mode}" for base, mode in zip(df["base"].tolist(), df["mode"].tolist(), strict=True)]


def _grid(df: pd.DataFrame, labels: list[str], column: pd.Series | list[str]) -> pd.DataFrame:
    work = pd.DataFrame({"pins": labels, "where": df["base"] + " · " + df["mode"], "value": column}, index=df.index)
    return work.pivot_table(index="pins", columns="where", values="value", aggfunc="first")


def _tips(df: pd.DataFrame) -> list[str]:
    """What hovering over a cell shows: its id, outcome, error and known issue."""
    return [f"{cell}: {outcome}{': ' + error if error else ''}{' [known issue: ' + issue + ']' if issue else ''}"
            for cell, outcome, error, issue in zip(df["cell"].tolist(), df["outcome"].tolist(), df["error"].tolist(),
                                                   df["issue"].tolist(), strict=True)]


def preload() -> None:
    """Import what html()'s Styler needs (its module, jinja2, and the templates its class compiles:
    0.1 s of the table's writing) for a caller with time now that writes the table later."""
    import pandas.io.formats.style  # noqa: F401 - imported for later


def html(df: pd.DataFrame, names: list[str], layout: pd.DataFrame, title: str = "Compatibility matrix",
         labels: list[str] | None = None) -> str:
    """A heatmap in `layout`'s order (report.pivot), coloured by outcome, error and issue on hover.
    `labels`: pin_labels(df, names) when the caller has them."""
    if df.empty:
        return f"<!doctype html><title>{title}</title><h1>{title}</h1><p>No cells ran.</p>\n"
    if labels is None:
        labels = pin_labels(df, names)
    legend = "".join(f'<span style="background-color:{COLOURS[o]};padding:2px 8px;margin-right:6px">'
                     f"{o.value}</span>" for o in Outcome)
    head = (f"<!doctype html>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<h1>{title}</h1>\n"
            f"<p>{legend}</p>\n")
    if layout.size > STYLER_MAX_CELLS:
        return head + _plain_heatmap(df, labels, layout)
    outcomes = _grid(df, labels, df["outcome"]).reindex(index=layout.index, columns=layout.columns)
    tips = _grid(df, labels, _tips(df)).reindex(index=layout.index, columns=layout.columns).fillna("not run")
    words = outcomes.map(lambda o: LABELS[Outcome(o)] if isinstance(o, str) else "·")
    words = words.rename_axis(index="pins", columns="base · mode")

    def colour(value: object) -> str:
        return f"background-color: {COLOURS[Outcome(value)]}" if isinstance(value, str) else ""

    styler = (words.style
              .apply(lambda _: outcomes.map(colour), axis=None)
              .set_tooltips(tips)
              .set_table_styles([{"selector": "td", "props": "text-align: center; padding: 4px 10px"}]))
    return f"{head}{styler.to_html()}\n"


def _plain_heatmap(df: pd.DataFrame, labels: list[str], layout: pd.DataFrame) -> str:
    """The heatmap of a large sweep: the same table, a CSS class per outcome, the tooltip as a title.
    Each place of the grid shows the first row there (as the Styler's pivot_table does), laid out
    from a dict: pandas' pivots and row iteration were most of the page's time."""
    esc = htmllib.escape
    first: dict[tuple[str, str], tuple[str, str]] = {}
    for key, outcome, tip in zip(zip(labels, where_labels(df), strict=True), df["outcome"].tolist(), _tips(df),
                                 strict=True):
        if key not in first:
            first[key] = (outcome, tip)
    columns = layout.columns.tolist()
    cls = {o.value: f' class="o-{o.value}"' for o in Outcome}
    word = {o.value: LABELS[o] for o in Outcome}
    style = "\n".join(f"table.matrix td.o-{o.value} {{ background-color: {COLOURS[o]}; }}" for o in Outcome)
    out = ["<style type=\"text/css\">\n"
           "table.matrix td { text-align: center; padding: 4px 10px; }\n"
           f"{style}\n</style>\n<table class=\"matrix\">\n  <thead>\n"
           "    <tr><th>base · mode</th>"
           + "".join(f"<th>{esc(str(c))}</th>" for c in columns)
           + "</tr>\n    <tr><th>pins</th>" + "<th></th>" * len(columns) + "</tr>\n  </thead>\n  <tbody>\n"]
    no_cell = f'<td title="{esc("not run")}">·</td>'
    for pins in layout.index.tolist():
        cells = []
        for c in columns:
            hit = first.get((pins, c))
            cells.append(no_cell if hit is None else f'<td{cls[hit[0]]} title="{esc(hit[1])}">{word[hit[0]]}</td>')
        out.append(f"    <tr><th>{esc(str(pins))}</th>{''.join(cells)}</tr>\n")
    out.append("  </tbody>\n</table>\n")
    return "".join(out)


def junit(df: pd.DataFrame, name: str = "compat-matrix") -> str:
    """One testcase per cell: incompatibilities are failures, infra errors are errors (no verdict),
    cells not run yet are skipped."""
    incompatible = [o.value for o in Outcome if o.is_incompatibility]
    suite = ET.Element("testsuite", name=name, tests=str(len(df)),
                       failures=str(int(df["outcome"].isin(incompatible).sum())),
                       errors=str(int((df["outcome"] == Outcome.INFRA_ERROR.value).sum())),
                       skipped=str(int((df["outcome"] == Outcome.NOT_RUN.value).sum())),
                       time=f"{df['duration_s'].sum():.2f}" if not df.empty else "0")
    root = ET.Element("testsuites")
    root.append(suite)
    if df.empty:
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
    # The testcases are written as text, the way ElementTree writes them indented: its serialiser
    # is pure Python, seconds for a large sweep. The envelope still comes from ElementTree.
    marker = "\0testcases\0"
    suite.text = marker
    ET.indent(root)
    envelope = ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
    columns = [df[c].tolist() for c in ("base", "mode", "cell", "duration_s", "outcome", "error", "issue")]
    infra, warn, not_run = Outcome.INFRA_ERROR.value, Outcome.WARN.value, Outcome.NOT_RUN.value
    cases = []
    for base, mode, cell, duration_s, outcome, error, issue in zip(*columns, strict=True):
        case = f'<testcase classname="{_attr(f"{base}.{mode}")}" name="{_attr(cell)}" time="{duration_s:.2f}"'
        message = error + (f" [known issue: {issue}]" if issue else "")
        if outcome in incompatible or outcome == infra:
            tag = "failure" if outcome in incompatible else "error"
            child = f'<{tag} type="{_attr(outcome)}" message="{_attr(message)}"'
            child += f">{_text(message)}</{tag}>" if message else " />"
            cases.append(f"{case}>\n      {child}\n    </testcase>")
        elif outcome == not_run:
            cases.append(f'{case}>\n      <skipped message="not run yet" />\n    </testcase>')
        elif outcome == warn:
            cases.append(f"{case}>\n      <system-out>{_text(f'warn: {error}')}</system-out>\n    </testcase>")
        else:
            cases.append(f"{case} />")
    return envelope.replace(marker, "\n    " + "\n    ".join(cases) + "\n  ", 1)


# What ElementTree escapes in an attribute value besides & < >.
_ATTRIBUTE_ENTITIES = {'"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"}
# Values with none of those characters are their own escape: most cell ids and errors, and
# saxutils.escape's seven replace calls were most of junit.xml's time.
_ATTRIBUTE_SPECIAL = re.compile('[&<>"\r\n\t]')
_TEXT_SPECIAL = re.compile("[&<>]")


def _attr(value: str) -> str:
    return escape(value, _ATTRIBUTE_ENTITIES) if _ATTRIBUTE_SPECIAL.search(value) else value


def _text(value: str) -> str:
    return escape(value) if _TEXT_SPECIAL.search(value) else value


def as_json(df: pd.DataFrame) -> str:
    """The table's rows as JSON objects (empty strings for absent values, as in the CSV)."""
    return "".join(json_pieces(df))


def json_pieces(df: pd.DataFrame) -> Iterator[str]:
    """as_json's text in pieces of a few thousand rows: a writer need not hold the text of a large
    sweep's rows, nor their encoded fields, all at once (a 35 MB text made from 100 MB of fields)."""
    filled = df.fillna("")
    fast = _json_rows(filled)
    if fast is not None:
        return fast
    return iter([json.dumps({"cells": filled.to_dict(orient="records")}, indent=1, ensure_ascii=False) + "\n"])


_FLOATS = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


# json's own encoder of a string (what json.dumps uses), not in the module's declared interface.
_ENCODE: Callable[[str], str] = getattr(json.encoder, "encode_basestring")  # noqa: B009


def _json_value(value: object) -> str | None:
    """One scalar as json.dumps writes it; None for anything that is not a plain scalar (exact types:
    a bool is no int here, a str subclass is no str)."""
    if type(value) is str:
        return _ENCODE(value)
    if type(value) is float:
        return "NaN" if value != value else _FLOATS.get(value) or float.__repr__(value)
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    return None


def _json_rows(df: pd.DataFrame, rows_per_piece: int = 2048) -> Iterator[str] | None:
    """json.dumps({"cells": rows}, indent=1, ensure_ascii=False) of plain scalars, written directly.

    json's indenting encoder is pure Python: seconds for the rows of a large sweep. None when a
    value is not a str, float, int, bool or None (json.dumps decides then), which is known before
    the first piece.
    """
    if not df.columns.is_unique or any(type(c) is not str for c in df.columns):
        return None
    if df.empty:
        return None
    encode = _ENCODE
    # A column of text is encoded a piece at a time; any other is encoded here, to know it can be.
    columns: list[tuple[list[Any], bool]] = []
    for i in range(df.shape[1]):
        values = df.iloc[:, i].tolist()
        if set(map(type, values)) == {str}:
            columns.append((values, True))
            continue
        column = [_json_value(v) for v in values]
        if None in column:
            return None
        columns.append((column, False))
    # One row: "  {\n   "cell": …,\n   "base": …\n  }", the keys written once into a template.
    keys = [encode(name).replace("{", "{{").replace("}", "}}") for name in df.columns]
    template = "  {{\n" + ",\n".join(f"   {key}: {{}}" for key in keys) + "\n  }}"

    def pieces() -> Iterator[str]:
        yield '{\n "cells": [\n'
        for start in range(0, len(df), rows_per_piece):
            end = start + rows_per_piece
            fields = [list(map(encode, values[start:end])) if text else values[start:end] for values, text in columns]
            rows = ",\n".join([template.format(*row) for row in zip(*fields, strict=True)])
            yield rows if start == 0 else ",\n" + rows
        yield "\n ]\n}\n"

    return pieces()
