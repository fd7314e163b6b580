"""Strict YAML, and the parsed documents kept as JSON so an unchanged re-run does not parse again."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from matrix.errors import ConfigError
from matrix.inputs import load_yaml
from matrix.resultcache import cache_root

MATRIX = "bases: {b: {image: x, python: '3.11'}}\npackages: {numpy: ['1.26.4', 2.0]}\nlimits: {timeout_s: 1.5}\n"


def kept() -> list[str]:
    where = cache_root() / "parsed"
    return sorted(p.name for p in where.glob("*.json")) if where.is_dir() else []


def test_a_plain_document_is_read_back_as_parsed_without_the_yaml_parser() -> None:
    before = kept()
    first = load_yaml(MATRIX, "m.yaml")
    assert first == {"bases": {"b": {"image": "x", "python": "3.11"}}, "packages": {"numpy": ["1.26.4", 2.0]},
                     "limits": {"timeout_s": 1.5}}
    assert len(kept()) == len(before) + 1
    # A new process reads the kept document: the same value, the same types, and no yaml imported.
    code = ("import sys; from matrix.inputs import load_yaml; "
            f"v = load_yaml({MATRIX!r}, 'm.yaml'); print(repr(v)); print('yaml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         env=os.environ.copy()).stdout.splitlines()
    assert out == [repr(first), "False"]


def test_errors_are_found_every_time_and_what_json_cannot_hold_is_not_kept() -> None:
    before = kept()
    for _ in range(2):
        with pytest.raises(ConfigError, match="duplicate key"):
            load_yaml("a: 1\na: 2\n", "d.yaml")
    assert load_yaml("since: 2025-01-01\n", "d.yaml") == {"since": dt.date(2025, 1, 1)}
    assert load_yaml("since: 2025-01-01\n", "d.yaml") == {"since": dt.date(2025, 1, 1)}
    assert load_yaml("{1: one}\n", "d.yaml") == {1: "one"}
    assert kept() == before
