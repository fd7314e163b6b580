"""The result cache: a key that moves with everything that can change a verdict, and nothing else."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from matrix import paths, resultcache
from matrix.cells import Cell
from matrix.index import expand
from matrix.resultcache import ResultCache
from matrix.store import Outcome, Record

MATRIX = """
bases: {b: {image: "python:3.11-slim", python: "3.11"}}
packages: {numpy: ["1.26.4", "2.2.6"], scipy: ["1.11.4"]}
modes: [together, layered]
layered_order: [scipy, numpy]
install: {ca_bundle: none}
"""
CELL = Cell("b", "layered", (("numpy", "1.26.4"), ("scipy", "1.11.4")))


def key(make_spec, text: str = MATRIX, cell: Cell = CELL, base_id: str = "sha256:aaa", backend: str = "docker",
        issue_probes: tuple[tuple[str, str], ...] = ()) -> str:
    return ResultCache(make_spec(text), backend, issue_probes, directory=Path("/nonexistent")).key(cell, base_id)


def test_the_key_moves_with_everything_that_can_change_a_verdict(make_spec) -> None:
    same = key(make_spec)
    assert key(make_spec) == same
    changed = {
        "base image": key(make_spec, base_id="sha256:bbb"),
        "backend": key(make_spec, backend="venv"),
        "pins": key(make_spec, cell=Cell("b", "layered", (("numpy", "2.2.6"), ("scipy", "1.11.4")))),
        "mode": key(make_spec, cell=Cell("b", "together", CELL.pins)),
        "layered order": key(make_spec, MATRIX.replace("[scipy, numpy]", "[numpy, scipy]")),
        "install options": key(make_spec, MATRIX.replace("{ca_bundle: none}", "{ca_bundle: none, only_binary: false}")),
        "index": key(make_spec, MATRIX.replace("{ca_bundle: none}",
                                               '{ca_bundle: none, index_url: "https://mirror.invalid/simple"}')),
        "limits": key(make_spec, MATRIX + "limits: {timeout_s: 60}\n"),
        "base definition": key(make_spec, MATRIX.replace('python: "3.11"', 'python: "3.11", setup: ["true"]')),
        "registry probes": key(make_spec, issue_probes=(("x", "import numpy"),)),
    }
    assert all(k != same for k in changed.values()), [what for what, k in changed.items() if k == same]
    assert len(set(changed.values())) == len(changed)


def test_a_wheel_dropped_into_a_find_links_directory_moves_the_key(make_spec, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    text = MATRIX.replace("{ca_bundle: none}", f"{{ca_bundle: none, find_links: [{wheels}]}}")
    before = key(make_spec, text)
    (wheels / "numpy-1.26.4-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
    assert key(make_spec, text) != before


def test_the_as_of_day_is_in_the_key(make_spec) -> None:
    """A cached verdict of today's world is never replayed for an --as-of run (nor the reverse)."""
    today = key(make_spec)
    spec = make_spec(MATRIX)

    def as_of(day: dt.date | None) -> str:
        s = expand(spec, day)
        assert s.as_of == day
        return ResultCache(s, "docker", directory=Path("/nonexistent")).key(CELL, "sha256:aaa")

    assert as_of(None) == today  # no as-of: the keys of earlier runs still hold
    first, second = as_of(dt.date(2024, 6, 1)), as_of(dt.date(2024, 6, 2))
    assert len({today, first, second}) == 3
    assert as_of(dt.date(2024, 6, 1)) == first


def test_the_probe_code_is_in_the_key(make_spec, monkeypatch: pytest.MonkeyPatch) -> None:
    before = key(make_spec)
    monkeypatch.setattr(resultcache, "_probe_code", lambda: "another probe")
    assert key(make_spec) != before


def test_verdicts_round_trip_and_infra_errors_are_never_kept(make_spec, tmp_path: Path) -> None:
    cache = ResultCache(make_spec(MATRIX), "docker", directory=tmp_path)
    k = cache.key(CELL, "sha256:aaa")
    assert cache.get(k) is None
    cache.put(k, Record.for_cell(CELL, backend="docker", run_id="r1", error="engine gone"))
    assert cache.get(k) is None
    done = Record.for_cell(CELL, backend="docker", run_id="r1", outcome=Outcome.IMPORT_ERROR, error="dtype size",
                           base_id="sha256:aaa", duration_s=3.2)
    cache.put(k, done)
    assert cache.get(k) == done
    (next(tmp_path.rglob("*.json"))).write_text("{not json")
    assert cache.get(k) is None  # unreadable: the cell runs again


def test_cache_root_honours_its_variable_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COMPAT_MATRIX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_root() == tmp_path / "xdg" / "compat-matrix"
    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path / "mine"))
    assert paths.cache_root() == tmp_path / "mine"
