"""Known-good pins derived from real sweep records, and the file they are written to."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import yaml

from matrix import registry
from matrix.registry import evidence, knowngood
from matrix.store import Outcome
from tests.unit import real_cells

REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"
DAY = dt.date(2026, 11, 28)


def seeded() -> registry.Registry:
    return registry.load(REPO_REGISTRY)


def test_the_newest_passing_pins_per_base_and_mode_with_provenance() -> None:
    derived = knowngood.derive(real_cells.bookworm(), seeded(), ("numpy", "scipy"))
    by_place = {(k.best.base, k.best.mode): k for k in derived.known_good}
    together = by_place[("bookworm-py311", "together")]
    assert dict(together.best.pins) == {"numpy": "1.26.4", "scipy": "1.11.4"}
    assert (together.passed, together.tested) == (1, 3)  # 1.26.4 passed; 2.2.6 conflict; 1.22.4 no wheel
    assert together.best.run_id == real_cells.RUN_ID and together.best.date == "2026-11-27"
    layered = by_place[("bookworm-py311", "layered")]
    assert dict(layered.best.pins) == {"numpy": "1.26.4", "scipy": "1.11.4"}
    assert (layered.passed, layered.tested) == (1, 2)
    assert derived.no_pass == ()


def test_newest_means_pep440_order_package_by_package() -> None:
    derived = knowngood.derive(real_cells.venv_sweep(), seeded(), ("numpy", "scipy"))
    by_place = {(k.best.base, k.best.mode): k for k in derived.known_good}
    # numpy 2.2.6 + scipy 1.14.1 passes everywhere, even on py313 where only that cell has wheels.
    assert {dict(k.best.pins)["numpy"] for k in derived.known_good} == {"2.2.6"}
    assert (by_place[("py313", "together")].passed, by_place[("py313", "together")].tested) == (1, 12)
    assert evidence.version_key("1.10.1") > evidence.version_key("1.9.3")
    assert evidence.version_key("2.0.0rc1") < evidence.version_key("2.0.0")


def test_a_warned_cell_is_not_known_good() -> None:
    records = real_cells.bookworm()
    passing = next(r for r in records if r.outcome is Outcome.PASS and r.mode == "layered")
    # The layered numpy 2.2.6 cell as it ends when the probe only prints NumPy 2's warning.
    records.append(dataclasses.replace(
        passing, cell="bookworm-py311-numpy2.2.6-scipy1.12.0-layered", pins={"numpy": "2.2.6", "scipy": "1.12.0"},
        outcome=Outcome.WARN, error="imports: A module that was compiled using NumPy 1.x cannot be run in NumPy 2.2.6"))
    derived = knowngood.derive(records, seeded())
    layered = next(k for k in derived.known_good if k.best.mode == "layered")
    assert dict(layered.best.pins)["numpy"] == "1.26.4"


def test_a_rerun_cell_replaces_its_earlier_verdict() -> None:
    records = real_cells.bookworm()
    passing = next(r for r in records if r.outcome is Outcome.PASS and r.mode == "together")
    # The same cell in an earlier run whose daemon went away: no verdict, superseded anyway.
    earlier = dataclasses.replace(passing, outcome=Outcome.INFRA_ERROR, error="Cannot connect to the Docker daemon",
                                  run_id="20261120T080000Z-aaaaaa")
    assert evidence.current([passing, earlier]) == [passing]
    assert evidence.current([earlier, passing]) == [passing]


def test_each_issue_gets_its_hits_and_the_pins_that_avoid_it() -> None:
    derived = knowngood.derive(real_cells.bookworm(), seeded())
    issue = next(i for i in derived.issues if i.name == "numpy_scipy_incompatibility")
    assert not any(i.hit_in for i in derived.issues if i is not issue)  # the GPU examples: no GPU cells here
    assert issue.name == "numpy_scipy_incompatibility"
    assert issue.hit_in == ("bookworm-py311-numpy2.2.6-scipy1.11.4-layered",)
    [(base, mode, sets)] = issue.avoided_by
    assert (base, mode) == ("bookworm-py311", "layered")
    assert [dict(p.pins) for p in sets] == [{"numpy": "1.26.4", "scipy": "1.11.4"}]
    assert issue.fix_results == ()  # numpy 1.24.3 + scipy 1.10.1 was not in this sweep


def test_the_tested_fix_results_come_from_the_sweep_that_ran_it() -> None:
    derived = knowngood.derive(real_cells.venv_sweep(), seeded())
    issue = next(i for i in derived.issues if i.name == "numpy_scipy_incompatibility")
    fix = {(b, m): o for b, m, o in issue.fix_results}
    assert fix[("py311", "together")] == "pass" and fix[("py311", "layered")] == "pass"
    assert fix[("py312", "together")] == "no-wheel"
    assert len(issue.hit_in) == 10
    py311 = next(sets for b, m, sets in issue.avoided_by if (b, m) == ("py311", "layered"))
    assert dict(py311[0].pins) == {"numpy": "2.2.6", "scipy": "1.14.1"}


def test_the_file_is_written_beside_the_registry_which_is_never_touched(tmp_path: Path) -> None:
    reg_path = tmp_path / "registry" / "known-issues.yaml"
    reg_path.parent.mkdir()
    shutil.copy(REPO_REGISTRY, reg_path)
    before = (reg_path.read_bytes(), reg_path.stat().st_mtime_ns)
    reg = registry.load(reg_path)
    path = knowngood.write(real_cells.venv_sweep(), reg, today=DAY)
    assert path == tmp_path / "registry" / "known-good.yaml"
    assert (reg_path.read_bytes(), reg_path.stat().st_mtime_ns) == before
    data = yaml.safe_load(path.read_text())
    assert data["generated"] == "2026-11-28"
    assert data["runs"] == ["20261128T131343Z-8d9af3"]
    first = data["known_good"][0]
    assert first == {"base": "py310", "mode": "together", "pins": {"numpy": "2.2.6", "scipy": "1.14.1"},
                     "cell": "py310-numpy2.2.6-scipy1.14.1-together", "run": "20261128T131343Z-8d9af3",
                     "date": "2026-11-28", "passed": 8, "tested": 12}
    assert "numpy_scipy_incompatibility" in data["issues"]
    assert path.read_text().startswith("# Written by compat-matrix")
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_the_same_records_give_the_same_bytes_apart_from_the_date(tmp_path: Path) -> None:
    reg = seeded()
    records = real_cells.venv_sweep()
    first = knowngood.render(knowngood.derive(records, reg), DAY)
    shuffled = list(reversed(records))
    again = knowngood.render(knowngood.derive(shuffled, reg), DAY)
    assert first == again
    later = knowngood.render(knowngood.derive(records, reg), DAY + dt.timedelta(days=3))
    diff = [(a, b) for a, b in zip(first.splitlines(), later.splitlines(), strict=True) if a != b]
    assert diff == [("generated: '2026-11-28'", "generated: '2026-12-01'")]
