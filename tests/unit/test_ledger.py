"""The ledger: a verdict stays until its cell gets a newer one; merge joins shards of one matrix only."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from matrix import cells, spec
from matrix import run as pipeline
from matrix.errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, ConfigError
from matrix.ledger import LEDGER_FILE, Ledger, matrix_digest
from matrix.store import Outcome, Record, records_jsonl

MATRIX = """
bases:
  py311: {python: "3.11"}
packages:
  numpy: ["1.26.4", "2.2.6"]
  scipy: ["1.14.1"]
modes: [together, layered]
"""


def rec(cell: str, outcome: Outcome, run_id: str = "20260101T000000Z-aaaaaa", **fields: object) -> Record:
    base, *_, mode = cell.split("-")
    return Record(cell=cell, base=base, mode=mode, pins={}, outcome=outcome, run_id=run_id, **fields)


def test_a_verdict_stays_until_its_cell_gets_a_newer_one(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, [rec("a-together", Outcome.PASS), rec("b-together", Outcome.IMPORT_ERROR)])
    update = ledger.update([rec("a-together", Outcome.INFRA_ERROR, "2"), rec("b-together", Outcome.PASS, "2"),
                            rec("c-together", Outcome.INFRA_ERROR, "2")])
    assert ledger.get("a-together").outcome is Outcome.PASS  # an infra-error is no verdict
    assert [r.cell for r in update.kept_over_infra] == ["a-together"]
    assert ledger.get("b-together").outcome is Outcome.PASS and ledger.get("b-together").run_id == "2"
    assert ledger.get("c-together").outcome is Outcome.INFRA_ERROR  # no verdict yet: --resume runs it
    ledger.update([rec("c-together", Outcome.NO_WHEEL, "3")])
    assert ledger.get("c-together").outcome is Outcome.NO_WHEEL


def test_the_ledger_is_saved_whole_and_read_back_or_seeded_from_an_older_table(tmp_path: Path) -> None:
    assert Ledger.load(tmp_path).records == {}
    (tmp_path / "records.jsonl").write_text(records_jsonl([rec("a-together", Outcome.PASS)]))
    assert list(Ledger.load(tmp_path).records) == ["a-together"]  # results written before the ledger
    ledger = Ledger(tmp_path, [rec("b-layered", Outcome.CRASH), rec("a-together", Outcome.PASS)])
    ledger.save()
    assert [json.loads(x)["cell"] for x in (tmp_path / LEDGER_FILE).read_text().splitlines()] == [
        "a-together", "b-layered"]
    assert set(Ledger.load(tmp_path).records) == {"a-together", "b-layered"}
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / LEDGER_FILE).write_text("{not json\n")
    with pytest.raises(ConfigError, match="ledger.jsonl"):
        Ledger.load(tmp_path)


def test_the_table_is_the_ledger_within_the_matrix(tmp_path: Path) -> None:
    s = spec.parse(textwrap.dedent(MATRIX), tmp_path / "matrix.yaml")
    plan = cells.plan(s)
    ids = [c.id for c in plan.cells]
    ledger = Ledger(tmp_path, [rec(ids[2], Outcome.PASS), rec("gone-numpy1-together", Outcome.PASS),
                               rec(ids[0], Outcome.NO_WHEEL)])
    have, missing = ledger.table(plan.cells)
    assert [r.cell for r in have] == [ids[0], ids[2]]  # matrix order; the gone cell stays in the ledger only
    assert [c.id for c in missing] == [ids[1], ids[3]]


def test_the_matrix_digest_is_of_the_content_not_the_place(tmp_path: Path) -> None:
    a = spec.parse(textwrap.dedent(MATRIX), tmp_path / "a.yaml")
    b = spec.parse(textwrap.dedent(MATRIX), tmp_path / "elsewhere" / "b.yaml")
    c = spec.parse(textwrap.dedent(MATRIX).replace('"2.2.6"', '"2.2.6", "2.3.0"'), tmp_path / "a.yaml")
    assert matrix_digest(a) == matrix_digest(b) != matrix_digest(c)


def _shard(d: Path, s: spec.Spec, ids: list[str], outcome: Outcome = Outcome.PASS, digest: str | None = None) -> Path:
    d.mkdir(parents=True)
    rows = [rec(i, outcome, matrix=digest or matrix_digest(s)) for i in ids]
    (d / "records.jsonl").write_text(records_jsonl(rows))
    return d


def _merge_setup(tmp_path: Path) -> tuple[spec.Spec, list[str], pipeline.Options]:
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(MATRIX))
    s = spec.load(tmp_path / "matrix.yaml")
    ids = [c.id for c in cells.plan(s).cells]
    return s, ids, pipeline.Options(config=tmp_path / "matrix.yaml", results=tmp_path / "merged")


def test_merge_of_every_shard_writes_the_table(tmp_path: Path) -> None:
    s, ids, options = _merge_setup(tmp_path)
    dirs = [_shard(tmp_path / "s1", s, ids[:2]), _shard(tmp_path / "s2", s, ids[2:])]
    result = pipeline.merge(options, dirs, echo=lambda _: None)
    assert result.status == EXIT_OK and not result.not_run
    assert [r.cell for r in result.table] == ids
    assert "Partial" not in (options.results / "matrix.md").read_text()


def test_merge_with_a_shard_missing_lists_the_cells_and_writes_nothing(tmp_path: Path) -> None:
    s, ids, options = _merge_setup(tmp_path)
    dirs = [_shard(tmp_path / "s1", s, ids[:2])]
    result = pipeline.merge(options, dirs, echo=lambda _: None)
    assert result.status == EXIT_INFRA
    assert all(i in result.problems[0] for i in ids[2:])
    assert not options.results.exists()
    partial = pipeline.merge(dataclasses.replace(options, allow_partial=True), dirs, echo=lambda _: None)
    assert partial.status == EXIT_OK and [c.id for c in partial.not_run] == ids[2:]
    md = (options.results / "matrix.md").read_text()
    assert "Partial merge" in md and "2 not run yet" in md
    csv_text = (options.results / "matrix.csv").read_text()
    assert csv_text.count("not-run") == 2  # each missing cell is a row of its own kind


def test_merge_refuses_shards_of_another_matrix(tmp_path: Path) -> None:
    s, ids, options = _merge_setup(tmp_path)
    dirs = [_shard(tmp_path / "s1", s, ids[:2]), _shard(tmp_path / "s2", s, ids[2:], digest="0123456789abcdef")]
    with pytest.raises(ConfigError) as e:
        pipeline.merge(options, dirs, echo=lambda _: None)
    assert e.value.exit_code == 2 and "s2" in str(e.value) and "s1" not in e.value.file
    assert not options.results.exists()


def test_merge_is_taken_into_the_ledger_and_regressions_are_cell_by_cell(tmp_path: Path) -> None:
    s, ids, options = _merge_setup(tmp_path)
    options = dataclasses.replace(options, fail_on_regression=True)
    assert pipeline.merge(options, [_shard(tmp_path / "s1", s, ids)], echo=lambda _: None).status == EXIT_OK
    worse = _shard(tmp_path / "s2", s, ids[:1], Outcome.IMPORT_ERROR)
    (worse / "records.jsonl").write_text(records_jsonl(
        [rec(ids[0], Outcome.IMPORT_ERROR, "20270101T000000Z-bbbbbb", matrix=matrix_digest(s))]))
    result = pipeline.merge(dataclasses.replace(options, allow_partial=True), [worse], echo=lambda _: None)
    assert result.status == EXIT_FAILED
    assert [a.cell for a, _ in result.changes.regressions] == [ids[0]]
    assert len(result.table) == 4  # the other three keep the verdicts of the first merge


def test_known_good_pins_come_only_from_the_results_directory_they_belong_to(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "known-issues.yaml").write_text("[]\n")
    known = pipeline.load_registry(tmp_path / "matrix.yaml", None)
    beside = pipeline.Options(config=tmp_path / "matrix.yaml", results=tmp_path / "results")
    assert pipeline.feeds_known_good(beside, known)
    other = dataclasses.replace(beside, results=tmp_path / "out" / "s1")
    assert not pipeline.feeds_known_good(other, known)
    assert pipeline.feeds_known_good(dataclasses.replace(other, write_known_good=True), known)
    assert not pipeline.feeds_known_good(beside, None)


def test_result_files_are_as_readable_as_the_umask_says(tmp_path: Path) -> None:
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    Ledger(tmp_path, [rec("a-together", Outcome.PASS)]).save()
    assert stat.S_IMODE((tmp_path / LEDGER_FILE).stat().st_mode) == 0o666 & ~mask != 0o600


def test_results_that_cannot_be_written_are_infra_and_the_ledger_stays_whole(tmp_path: Path) -> None:
    from matrix.errors import ResultsUnwritable

    s, ids, options = _merge_setup(tmp_path)
    (options.results / "matrix.csv").mkdir(parents=True)  # a file of the table cannot be replaced
    with pytest.raises(ResultsUnwritable) as e:
        pipeline.merge(options, [_shard(tmp_path / "s1", s, ids)], echo=lambda _: None)
    assert e.value.exit_code == 3 and "matrix.csv" in str(e.value)
    assert set(Ledger.load(options.results).records) == set(ids)  # the ledger was written whole first
    assert not list(options.results.glob(".*.tmp"))
