"""The table derived from records: CSV columns, the Markdown pivot and legend."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from matrix import report, store
from matrix.store import Outcome, Record, RecordLog, load_records


def rec(numpy: str, mode: str, outcome: Outcome, error: str = "") -> Record:
    return Record(cell=f"b-numpy{numpy}-scipy1.11.4-{mode}", base="b", mode=mode,
                  pins={"numpy": numpy, "scipy": "1.11.4"}, outcome=outcome, error=error,
                  installed={"numpy": numpy, "scipy": "1.11.4"}, duration_s=1.5, python="3.11.2")


RECORDS = [
    rec("2.2.6", "together", Outcome.RESOLVE_CONFLICT, "Cannot install numpy==2.2.6 and scipy==1.11.4"),
    rec("10.0.0", "together", Outcome.PASS),
    rec("1.26.4", "together", Outcome.PASS),
    rec("1.26.4", "layered", Outcome.PASS),
    rec("2.2.6", "layered", Outcome.IMPORT_ERROR,
        "imports: import scipy.stats: ValueError: numpy.dtype size changed | x"),
]


def test_csv_has_one_row_per_cell_with_the_issue_columns(tmp_path: Path) -> None:
    report.write(RECORDS, tmp_path, ("numpy", "scipy"))
    with open(tmp_path / "matrix.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:11] == ["cell", "base", "mode", "numpy", "scipy", "outcome", "error", "issue",
                                  "installed_numpy", "installed_scipy", "duration_s"]
    assert len(rows) == 5
    assert rows[4]["outcome"] == "import-error" and "dtype size changed" in rows[4]["error"]


def test_markdown_pivot_sorts_versions_as_versions_and_has_a_legend(tmp_path: Path) -> None:
    report.write(RECORDS, tmp_path, ("numpy", "scipy"))
    md = (tmp_path / "matrix.md").read_text()
    grid = [ln for ln in md.splitlines() if ln.startswith("| numpy")]
    assert [ln.split("|")[1].strip() for ln in grid] == [
        "numpy 1.26.4, scipy 1.11.4", "numpy 2.2.6, scipy 1.11.4", "numpy 10.0.0, scipy 1.11.4"]
    header = next(ln for ln in md.splitlines() if ln.startswith("| pins"))
    assert header.index("b · together") < header.index("b · layered")
    assert "⛔" in grid[1] and "❌" in grid[1] and "·" in grid[2]
    assert "## Legend" in md and "resolve-conflict" in md
    assert "dtype size changed \\| x" in md  # a pipe in an error cannot break the table
    assert "✅ pass: 3" in md


def test_the_records_behind_the_table_are_written_beside_it(tmp_path: Path) -> None:
    report.write(RECORDS, tmp_path, ("numpy", "scipy"))
    assert load_records(tmp_path / "records.jsonl") == RECORDS


def test_records_round_trip(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "r.jsonl")
    for r in RECORDS:
        log.append(r)
    log.close()
    assert load_records(tmp_path / "r.jsonl") == RECORDS


def test_a_record_line_is_what_json_writes_of_it_whatever_its_fields_hold() -> None:
    """record_line writes the common record itself; it must be json's text for every record."""
    import json
    from dataclasses import replace

    odd = [
        replace(RECORDS[0], python=None, cached=True, as_of="2024-05-01", error="é \u2028 \"quoted\"\n\ttab \x00"),
        replace(RECORDS[1], duration_s=3),  # an int, as a hand-written records file may hold
        replace(RECORDS[1], duration_s=float("nan")),
        replace(RECORDS[1], duration_s=float("-inf")),
        replace(RECORDS[1], cached=1),  # type: ignore[arg-type]
        replace(RECORDS[2], pins={"scipy": "1.11.4", "numpy": "2.2.6"}, installed={"numpy": None}),
        replace(RECORDS[2], pins={"numpy": 2, "torch": 1.5}),  # type: ignore[dict-item]
        replace(RECORDS[3], error=None),  # type: ignore[arg-type]
    ]
    for r in [*RECORDS, *odd]:
        assert store.record_line(r) == json.dumps(r.serialize(), sort_keys=True) + "\n"
    assert store.records_jsonl(odd) == "".join(json.dumps(r.serialize(), sort_keys=True) + "\n" for r in odd)
    try:
        store.record_line(replace(RECORDS[0], pins={"numpy": object()}))  # type: ignore[dict-item]
    except TypeError as e:
        assert "not JSON serializable" in str(e)
    else:
        raise AssertionError("an object json cannot write was written")


def test_lines_encode_a_record_once_and_a_changed_one_again(monkeypatch) -> None:
    from dataclasses import replace

    expected = store.records_jsonl(RECORDS), store.records_jsonl(list(reversed(RECORDS)))
    made: list[str] = []
    real = store.record_line
    monkeypatch.setattr(store, "record_line", lambda r: made.append(r.cell) or real(r))
    lines = store.Lines()
    first = "".join(lines.chunks(RECORDS, lines=2))
    again = "".join(lines.chunks(reversed(RECORDS)))
    assert (first, again) == expected and len(made) == len(RECORDS)
    other = replace(RECORDS[0], outcome=Outcome.PASS)  # another record of the same cell
    assert lines.of(other) == real(other) and len(made) == len(RECORDS) + 1


def test_a_file_written_in_pieces_is_whole_or_not_there(tmp_path: Path) -> None:
    from matrix.paths import atomic_write

    target = tmp_path / "records.jsonl"
    atomic_write(target, iter(["a\n", "b\n"]))
    assert target.read_text() == "a\nb\n"

    def pieces():
        yield "c\n"
        raise RuntimeError("the encoder failed half-way")

    try:
        atomic_write(target, pieces())
    except RuntimeError:
        pass
    assert target.read_text() == "a\nb\n"
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]


def _read_as_json_reads(path: Path) -> list[Record]:
    """What load_records reads, one json.loads a line (as it did before it scanned lines itself)."""
    import json

    with open(path, encoding="utf-8") as f:
        return [Record.from_dict(json.loads(line)) for line in f if line.strip()]


def test_records_read_back_as_json_reads_them_with_the_same_errors(tmp_path: Path) -> None:
    import json

    good = [json.dumps(r.serialize(), sort_keys=True) for r in RECORDS]
    files = {
        "plain": "\n".join(good) + "\n",
        "crlf, blank lines, spaces, no last newline": "\r\n".join(["", good[0], "  ", " " + good[1] + " \t", good[2]]),
        "an unknown key, keys in any order": json.dumps({**RECORDS[0].serialize(), "new": 1}) + "\n",
        "two objects on a line": good[0] + " " + good[1] + "\n",
        "a line cut short": good[0][:-5] + "\n",
        "an array": "[" + good[0] + "]\n",
        "null": "null\n",
        "no such outcome": good[0].replace('"resolve-conflict"', '"sideways"') + "\n",
        "an outcome that is no string": good[0].replace('"resolve-conflict"', "[1]") + "\n",
        "a field missing": json.dumps({k: v for k, v in RECORDS[0].serialize().items() if k != "cell"}) + "\n",
        "a BOM": "\ufeff" + good[0] + "\n",
    }
    for what, text in files.items():
        path = tmp_path / "records.jsonl"
        path.write_text(text, encoding="utf-8", newline="")
        try:
            expected: object = _read_as_json_reads(path)
        except store.UNREADABLE as e:
            expected = (type(e), str(e))
        try:
            got: object = load_records(path)
        except store.UNREADABLE as e:
            got = (type(e), str(e))
        assert got == expected, what


def test_records_read_from_one_file_share_their_common_strings(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(store.records_jsonl(RECORDS))
    a, b = load_records(path)[1:3]
    assert a.base is b.base and a.python is b.python and a.pins["scipy"] is b.pins["scipy"]


def _pivot_by_pandas(df, names):
    """report.pivot as pandas' pivot_table made it (before it was laid out with dicts)."""
    import pandas as pd

    from matrix import exports

    if df.empty:
        return pd.DataFrame()
    work = df.copy()
    work["pins"] = exports.pin_labels(df, names)
    work["where"] = work["base"] + " · " + work["mode"]
    work["symbol"] = work["outcome"].map({o.value: report.SYMBOLS[o] for o in Outcome})
    grid = work.pivot_table(index="pins", columns="where", values="symbol", aggfunc="first")
    order = (work.drop_duplicates("pins")
             .sort_values(by=names, key=lambda col: col.map(report._version_key))["pins"])
    grid = grid.reindex(index=list(order), columns=list(dict.fromkeys(work["where"])))
    return grid.fillna(report.NO_CELL)


def test_the_grid_is_the_one_pandas_pivot_table_lays_out() -> None:
    import random

    rng = random.Random(5)
    # Versions that sort as versions, equal versions written two ways (1.0, 1.0.0), a blank pin, text.
    numpys = ["1.0", "1.0.0", "2.2.6", "10.0.0", "1.26.4", "", "dev-build", "1.0.0rc1"]
    for trial in range(40):
        rows = []
        for _ in range(rng.randint(1, 60)):
            numpy, scipy = rng.choice(numpys), rng.choice(["1.11.4", "1.9", "1.9.0", ""])
            pins = {k: v for k, v in (("numpy", numpy), ("scipy", scipy)) if v or trial % 2}
            rows.append(Record(cell=f"c{len(rows)}", base=rng.choice(["b", "a", "py311"]),
                               mode=rng.choice(["together", "layered"]), pins=pins, outcome=rng.choice(list(Outcome))))
        names = report.packages_of(rows, ("numpy", "scipy"))
        df = report.table(rows, ("numpy", "scipy"))
        got, expected = report.pivot(df, names), _pivot_by_pandas(df, names)
        assert got.index.tolist() == expected.index.tolist() and got.index.name == expected.index.name
        assert got.columns.tolist() == expected.columns.tolist()
        assert got.values.tolist() == expected.values.tolist()
        assert report.github_table(got, index=True) == report.github_table(expected, index=True)


def test_a_large_heatmap_shows_each_places_first_row_and_not_run_where_none_is(monkeypatch) -> None:
    from matrix import exports

    monkeypatch.setattr(exports, "STYLER_MAX_CELLS", 0)  # the page of a large sweep
    rows = [*RECORDS, rec("1.26.4", "layered", Outcome.CRASH, "a second row <of> one place")]
    df = report.table(rows, ("numpy", "scipy"))
    names = ["numpy", "scipy"]
    page = exports.html(df, names, report.pivot(df, names))
    row = next(ln for ln in page.splitlines() if "<th>numpy 1.26.4, scipy 1.11.4</th>" in ln)
    assert row.count("<td") == 2 and "o-crash" not in row and "a second row" not in row
    row = next(ln for ln in page.splitlines() if "<th>numpy 10.0.0, scipy 1.11.4</th>" in ln)
    assert '<td title="not run">·</td>' in row and 'class="o-pass"' in row
    row = next(ln for ln in page.splitlines() if "<th>numpy 2.2.6, scipy 1.11.4</th>" in ln)
    assert 'title="b-numpy2.2.6-scipy1.11.4-layered: import-error: imports: import scipy.stats: ValueError' in row


def test_junit_messages_read_back_as_they_were_whatever_characters_they_hold() -> None:
    import xml.etree.ElementTree as ET

    from matrix import exports

    texts = ["plain", 'a "quoted" <tag> & more', "line\nbreak\tand\r return", "", "'single'"]
    rows = [rec(f"1.{i}", "together", Outcome.IMPORT_ERROR, t) for i, t in enumerate(texts)]
    rows.append(rec("9.0", "together", Outcome.WARN, "warn <&> text"))
    suite = ET.fromstring(exports.junit(report.table(rows, ("numpy", "scipy"))).split("\n", 1)[1]).find("testsuite")
    assert suite is not None
    cases = list(suite.iter("testcase"))
    for case, text in zip(cases, texts, strict=False):
        failure = case.find("failure")
        assert failure is not None and failure.get("message") == text
        assert (failure.text or "") == text.replace("\r", "\n")  # XML reads a carriage return in text as a newline
    out = cases[-1].find("system-out")
    assert out is not None and out.text == "warn: warn <&> text"


def test_the_json_in_pieces_is_what_json_dumps_writes(monkeypatch) -> None:
    import json

    from matrix import exports

    rows = [*RECORDS, rec("3.0.0", "together", Outcome.INFRA_ERROR, 'é "quoted" {braces} \n\t')]
    df = report.table(rows, ("numpy", "scipy"))
    expected = json.dumps({"cells": df.fillna("").to_dict(orient="records")}, indent=1, ensure_ascii=False) + "\n"
    assert exports.as_json(df) == expected
    real = exports._json_rows
    monkeypatch.setattr(exports, "_json_rows", lambda df: real(df, rows_per_piece=2))
    pieces = list(exports.json_pieces(df))
    assert len(pieces) == 5 and "".join(pieces) == expected  # the head, three pieces of rows, the end


def test_the_last_file_of_some_records_lets_their_lines_go() -> None:
    lines = store.Lines()
    text = "".join(lines.chunks(RECORDS))
    assert len(lines._made) == len(RECORDS)
    assert "".join(lines.chunks(RECORDS[:3], last=True)) == store.records_jsonl(RECORDS[:3])
    assert len(lines._made) == len(RECORDS) - 3 and text == store.records_jsonl(RECORDS)


def test_summary_counts() -> None:
    assert store.summary(RECORDS) == "3 pass, 1 import-error, 1 resolve-conflict"


REGISTRY = """
- issue: numpy_scipy_incompatibility
  error: "numpy.dtype size changed"
  cause: "Binary incompatibility between NumPy and SciPy versions"
  solution: "pip install numpy==1.24.3 scipy==1.10.1"
  versions: [v74.3, v76]
"""


def test_failures_name_their_issue_and_fix_and_new_ones_get_a_suggested_entry(tmp_path: Path) -> None:
    from matrix import registry

    reg = registry.parse(REGISTRY, tmp_path / "known-issues.yaml")
    report.write(RECORDS, tmp_path, ("numpy", "scipy"), registry.annotate(reg, RECORDS))
    with open(tmp_path / "matrix.csv") as f:
        issues = {r["cell"]: r["issue"] for r in csv.DictReader(f)}
    assert issues["b-numpy2.2.6-scipy1.11.4-layered"] == "numpy_scipy_incompatibility"
    assert issues["b-numpy2.2.6-scipy1.11.4-together"] == ""
    md = (tmp_path / "matrix.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| b-numpy2.2.6-scipy1.11.4-layered"))
    assert "numpy_scipy_incompatibility" in row and "pip install numpy==1.24.3 scipy==1.10.1" in row
    new = md.split("## New failures (no registry entry matches)")[1]
    assert "b-numpy2.2.6-scipy1.11.4-together" in new and "Cannot install numpy==2.2.6" in new
    assert "numpy_scipy_incompatibility" not in new.split("## Legend")[0]


def test_a_crash_mid_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch) -> None:
    import os

    from matrix.paths import atomic_write

    target = tmp_path / "matrix.csv"
    atomic_write(target, "old table\n")

    def disk_gone(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_gone)
    try:
        atomic_write(target, "new table, half written\n" * 1000)
    except OSError:
        pass
    assert target.read_text() == "old table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["matrix.csv"]  # no temporary file left


def test_html_junit_and_json_are_written_beside_the_table(tmp_path: Path) -> None:
    import json
    import xml.etree.ElementTree as ET

    from matrix import registry

    reg = registry.parse(REGISTRY, tmp_path / "known-issues.yaml")
    infra = rec("3.0.0", "together", Outcome.INFRA_ERROR, "Read timed out")
    report.write([*RECORDS, infra], tmp_path, ("numpy", "scipy"), registry.annotate(reg, [*RECORDS, infra]))

    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["b-numpy2.2.6-scipy1.11.4-layered"].find("failure")
    assert failure is not None and failure.get("type") == "import-error"
    assert "dtype size changed" in failure.get("message", "")
    assert "[known issue: numpy_scipy_incompatibility]" in failure.get("message", "")
    assert cases["b-numpy3.0.0-scipy1.11.4-together"].find("error") is not None
    assert list(cases["b-numpy1.26.4-scipy1.11.4-together"]) == []

    page = (tmp_path / "matrix.html").read_text()
    assert "background-color: #f4a09c" in page  # the import-error cell, coloured
    assert "known issue: numpy_scipy_incompatibility" in page  # on hover
    assert "numpy 2.2.6, scipy 1.11.4" in page

    cells = json.loads((tmp_path / "matrix.json").read_text())["cells"]
    assert len(cells) == 6 and cells[4]["issue"] == "numpy_scipy_incompatibility"


def test_what_the_run_imports_while_its_cells_run_includes_the_heatmaps_styler() -> None:
    """run._load_report (the sweep's `meanwhile`) leaves only the writing to the table's end: the
    Styler's module and the templates it compiles are imported with pandas."""
    code = ("import sys; from matrix import run; run._load_report(); "
            "print(sorted(m for m in ('pandas', 'pandas.io.formats.style', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("\n")[0] == "['jinja2', 'pandas', 'pandas.io.formats.style']"
