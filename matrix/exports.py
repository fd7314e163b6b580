"""The table in the forms other tools render: an HTML heatmap, JUnit XML for CI systems, JSON.

All three are derived from the same DataFrame report.table() builds, never from logs.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pandas as pd

from matrix.classify import Outcome

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
}


# Words, not the Markdown's emoji: a browser without an emoji font shows boxes.
LABELS = {
    Outcome.PASS: "pass", Outcome.WARN: "warn", Outcome.IMPORT_ERROR: "import", Outcome.CRASH: "crash",
    Outcome.TIMEOUT: "timeout", Outcome.RESOLVE_CONFLICT: "conflict", Outcome.NO_WHEEL: "no wheel",
    Outcome.BUILD_ERROR: "build", Outcome.INFRA_ERROR: "infra",
}


def _grid(df: pd.DataFrame, names: list[str], column: pd.Series) -> pd.DataFrame:
    work = df.assign(
        pins=df[names].apply(lambda row: ", ".join(f"{n} {row[n]}" for n in names if row[n]), axis=1),
        where=df["base"] + " · " + df["mode"],
        value=column,
    )
    return work.pivot_table(index="pins", columns="where", values="value", aggfunc="first")


def html(df: pd.DataFrame, names: list[str], layout: pd.DataFrame, title: str = "Compatibility matrix") -> str:
    """A heatmap in `layout`'s order (report.pivot), coloured by outcome, error and issue on hover."""
    if df.empty:
        return f"<!doctype html><title>{title}</title><h1>{title}</h1><p>No cells ran.</p>\n"
    outcomes = _grid(df, names, df["outcome"]).reindex(index=layout.index, columns=layout.columns)
    words = outcomes.map(lambda o: LABELS[Outcome(o)] if isinstance(o, str) else "·")
    words = words.rename_axis(index="pins", columns="base · mode")
    tips = _grid(df, names, df["cell"] + ": " + df["outcome"] + (
        df["error"].where(df["error"] == "", ": " + df["error"])) + (
        df["issue"].where(df["issue"] == "", " [known issue: " + df["issue"] + "]"))
    ).reindex(index=layout.index, columns=layout.columns).fillna("not run")

    def colour(value: object) -> str:
        return f"background-color: {COLOURS[Outcome(value)]}" if isinstance(value, str) else ""

    styler = (words.style
              .apply(lambda _: outcomes.map(colour), axis=None)
              .set_tooltips(tips)
              .set_table_styles([{"selector": "td", "props": "text-align: center; padding: 4px 10px"}]))
    legend = "".join(f'<span style="background-color:{COLOURS[o]};padding:2px 8px;margin-right:6px">'
                     f"{o.value}</span>" for o in Outcome)
    return (f"<!doctype html>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<h1>{title}</h1>\n"
            f"<p>{legend}</p>\n{styler.to_html()}\n")


def junit(df: pd.DataFrame, name: str = "compat-matrix") -> str:
    """One testcase per cell: incompatibilities are failures, infra errors are errors (no verdict)."""
    incompatible = [o.value for o in Outcome if o.is_incompatibility]
    suite = ET.Element("testsuite", name=name, tests=str(len(df)),
                       failures=str(int(df["outcome"].isin(incompatible).sum())),
                       errors=str(int((df["outcome"] == Outcome.INFRA_ERROR.value).sum())),
                       time=f"{df['duration_s'].sum():.2f}" if not df.empty else "0")
    for row in df.itertuples(index=False):
        case = ET.SubElement(suite, "testcase", classname=f"{row.base}.{row.mode}", name=row.cell,
                             time=f"{row.duration_s:.2f}")
        message = row.error + (f" [known issue: {row.issue}]" if row.issue else "")
        if row.outcome in incompatible:
            ET.SubElement(case, "failure", type=row.outcome, message=message).text = message
        elif row.outcome == Outcome.INFRA_ERROR.value:
            ET.SubElement(case, "error", type=row.outcome, message=message).text = message
        elif row.outcome == Outcome.WARN.value:
            ET.SubElement(case, "system-out").text = f"warn: {row.error}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def as_json(df: pd.DataFrame) -> str:
    """The table's rows as JSON objects (empty strings for absent values, as in the CSV)."""
    return json.dumps({"cells": df.fillna("").to_dict(orient="records")}, indent=1, ensure_ascii=False) + "\n"
