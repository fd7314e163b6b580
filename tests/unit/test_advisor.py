"""The pin advisor on real sweep records: partners that pass, failures with their issue, untested."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from matrix import registry
from matrix.errors import EXIT_CONFIG, ConfigError
from matrix.registry import advisor, evidence
from matrix.store import Outcome, Record
from tests.unit import real_cells

REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"


@pytest.fixture
def reg() -> registry.Registry:
    return registry.load(REPO_REGISTRY)


@pytest.mark.parametrize("query", ["numpy", "numpy>=2", "numpy==", "==2.0.2", "numpy==2.0.2; python_version<'3'",
                                   "numpy==2.0.2 scipy==1.10.1", ""])
def test_a_query_that_is_not_one_exact_pin_is_bad_input(query: str) -> None:
    with pytest.raises(ConfigError) as err:
        advisor.parse_query(query)
    assert err.value.exit_code == EXIT_CONFIG and "name==version" in str(err.value)


def test_partners_that_pass_newest_first_and_failures_with_their_issue(reg: registry.Registry) -> None:
    a = advisor.advise(real_cells.venv_sweep(), "numpy==2.0.2", base="py311", registry=reg)
    assert [dict(p.pins) for p in a.passing] == [{"scipy": "1.14.1"}]
    assert a.passing[0].where == (("py311", "together"), ("py311", "layered"))
    failing = {(dict(s.partners)["scipy"], s.mode): s for s in a.failing}
    assert set(failing) == {("1.11.4", "together"), ("1.10.1", "together"), ("1.11.4", "layered"),
                            ("1.10.1", "layered")}
    assert failing[("1.11.4", "layered")].issue.name == "numpy_scipy_incompatibility"
    assert failing[("1.11.4", "together")].outcome is Outcome.RESOLVE_CONFLICT
    assert failing[("1.11.4", "together")].issue is None
    assert a.untested == ()
    text = advisor.format_advice(a)
    assert "passes with (newest first):\n  scipy 1.14.1  py311·together, py311·layered" in text
    assert "known issue numpy_scipy_incompatibility" in text
    assert "fix: pip install numpy==1.24.3 scipy==1.10.1" in text


def test_the_reverse_question_the_newest_numpy_for_a_scipy(reg: registry.Registry) -> None:
    a = advisor.advise(real_cells.venv_sweep(), "scipy==1.10.1", base="py311", registry=reg, maximise="numpy")
    assert [dict(p.pins)["numpy"] for p in a.passing] == ["1.26.4", "1.24.3"]
    assert dict(a.best.pins) == {"numpy": "1.26.4"}
    assert "newest numpy that passes with scipy==1.10.1 on py311: 1.26.4" in advisor.format_advice(a)
    # On a base without wheels for scipy 1.10.1 nothing passes.
    none = advisor.advise(real_cells.venv_sweep(), "scipy==1.10.1", base="py313", registry=reg, maximise="numpy")
    assert none.best is None and {s.outcome for s in none.failing} == {Outcome.NO_WHEEL}
    assert "none passed" in advisor.format_advice(none)


def test_untested_values_of_the_other_axes(reg: registry.Registry) -> None:
    # numpy 1.22.4 ran only together: the layered cell with scipy 1.11.4 has no evidence.
    a = advisor.advise(real_cells.bookworm(), "numpy==1.22.4", registry=reg)
    assert a.passing == () and [s.outcome for s in a.failing] == [Outcome.NO_WHEEL]
    assert a.untested == (advisor.Untested("scipy", "1.11.4", (("bookworm-py311", "layered"),)),)
    assert "untested (no cell has evidence):\n  scipy 1.11.4" in advisor.format_advice(a)


def test_a_version_no_cell_pinned_is_untested_and_the_tested_ones_are_named(reg: registry.Registry) -> None:
    a = advisor.advise(real_cells.venv_sweep(), "numpy==2.1.0", registry=reg)
    assert a.cells == 0 and a.passing == () and a.failing == ()
    assert a.tested_versions == ("2.2.6", "2.0.2", "1.26.4", "1.24.3")
    assert "no cell pinned numpy==2.1.0; tested versions of numpy: 2.2.6, 2.0.2, 1.26.4, 1.24.3" in \
        advisor.format_advice(a)


def test_infra_errors_are_no_evidence(reg: registry.Registry) -> None:
    records = real_cells.bookworm()
    # The layered numpy 1.26.4 cell as it ends when the daemon dies mid-cell.
    records = [dataclasses.replace(r, outcome=Outcome.INFRA_ERROR, error="Cannot connect to the Docker daemon")
               if r.cell == "bookworm-py311-numpy1.26.4-scipy1.11.4-layered" else r for r in records]
    a = advisor.advise(records, "numpy==1.26.4", registry=reg)
    assert [p.where for p in a.passing] == [(("bookworm-py311", "together"),)]
    assert a.untested == (advisor.Untested("scipy", "1.11.4", (("bookworm-py311", "layered"),)),)


def test_names_are_compared_canonically(reg: registry.Registry) -> None:
    a = advisor.advise(real_cells.bookworm(), "NumPy==2.2.6", registry=reg, maximise="SciPy")
    assert a.query == advisor.Query("numpy", "2.2.6") and a.maximise == "scipy"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"query": "numpi==2.2.6"}, "did you mean 'numpy'"),
        ({"query": "numpy==2.2.6", "base": "bookworm-py31"}, "did you mean 'bookworm-py311'"),
        ({"query": "numpy==2.2.6", "maximise": "numpy"}, "the queried package itself"),
        ({"query": "numpy==2.2.6", "maximise": "torch"}, "no cell in the results pins 'torch'"),
    ],
)
def test_queries_the_results_cannot_answer_are_bad_input(kwargs: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        advisor.advise(real_cells.bookworm(), **kwargs)  # type: ignore[arg-type]


def test_latest_records_prefers_the_table_then_the_newest_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no results"):
        evidence.latest_records(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    older, newer = real_cells.bookworm()[:1], real_cells.bookworm()[1:3]
    write(runs / "20261101T000000Z-aaaaaa.jsonl", older)
    write(runs / "20261127T094512Z-b00c31.jsonl", newer)
    assert [r.cell for r in evidence.latest_records(tmp_path)] == [r.cell for r in newer]
    write(tmp_path / "records.jsonl", older)
    assert [r.cell for r in evidence.latest_records(tmp_path)] == [r.cell for r in older]
    (tmp_path / "records.jsonl").write_text("not json\n")
    with pytest.raises(ConfigError, match="not a records file"):
        evidence.latest_records(tmp_path)


def write(path: Path, records: list[Record]) -> None:
    path.write_text("".join(json.dumps(r.serialize()) + "\n" for r in records))
