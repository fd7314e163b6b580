"""Strict YAML, and the parsed documents kept as JSON so an unchanged re-run does not parse again."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matrix.errors import ConfigError
from matrix.inputs import load_yaml
from matrix.paths import cache_root

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


def bomb(levels: int, merge: bool = False) -> str:
    """The billion-laughs document: each level's anchor holds ten aliases of the one before."""
    if merge:
        lines = ["l0: &l0 {a: x, b: x, c: x, d: x, e: x, f: x, g: x, h: x, i: x, j: x}"]
        lines += [f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * 10)}], k{i}: x}}" for i in range(1, levels)]
    else:
        lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"bases: *l{levels - 1}"]) + "\n"


def run_cli(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """`compat-matrix list` on the text, in a process of its own: a hang fails the test at the bound."""
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(text)
    return subprocess.run([sys.executable, "-m", "matrix", "list", "--config", str(matrix)], capture_output=True,
                          text=True, timeout=60, env=os.environ.copy(), check=False)


@pytest.mark.parametrize("merge", [False, True])
def test_an_alias_bomb_is_refused_before_it_expands_and_is_never_kept(tmp_path: Path, merge: bool) -> None:
    before = kept()
    for levels in (5, 7, 10, 30):
        text = bomb(levels, merge)
        assert len(text) < 3000  # a few hundred bytes a level
        with pytest.raises(ConfigError, match="expand it to .* values, more than 100,000") as info:
            load_yaml(text, "bomb.yaml")
        assert info.value.file == "bomb.yaml"
    done = run_cli(tmp_path, bomb(10, merge))
    assert done.returncode == 2, done.stderr
    assert "matrix.yaml: its aliases (*name) expand it to" in done.stderr and "Traceback" not in done.stderr
    assert kept() == before


def test_aliases_within_the_bound_are_fine() -> None:
    value = load_yaml(bomb(4), "ok.yaml")  # 10 000 leaves
    assert len(value["bases"]) == 10 and value["bases"][0][0][0] == ["x"] * 10


def test_an_alias_to_a_node_that_contains_it_is_refused() -> None:
    for text in ("a: &a [1, *a]\n", "a: &a {b: [*a]}\n", "a: &a {<<: {c: 1}, b: {d: *a}}\n"):
        with pytest.raises(ConfigError, match="line 1: an alias refers to a list or mapping that contains it"):
            load_yaml(text, "cycle.yaml")


@pytest.mark.parametrize("text", [
    "x: " + "[" * 5000 + "]" * 5000 + "\n",
    "x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "".join(f"{' ' * i}- \n" for i in range(3000)),
    "x: " + "[" * 65 + "]" * 65 + "\n",
])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_yaml(text, "deep.yaml")
    done = run_cli(tmp_path, text)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert load_yaml("x: " + "[" * 63 + "]" * 63 + "\n", "ok.yaml")["x"]  # the bound, not less


def test_values_python_cannot_read_are_refused_with_their_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 2: .* \(5000 characters\) cannot be read as a YAML int"):
        load_yaml("a: 1\nb: " + "9" * 5000 + "\n", "big.yaml")
    with pytest.raises(ConfigError, match=r"line 1: '2025-02-30' cannot be read as a YAML timestamp"):
        load_yaml("since: 2025-02-30\n", "date.yaml")
    done = run_cli(tmp_path, "bases: {b: {image: x}}\npackages: {numpy: ['1.26.4']}\nlimits: {timeout_s: "
                   + "9" * 5000 + "}\n")
    assert done.returncode == 2 and "line 3:" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_merge_keys_share_settings_and_the_mappings_own_keys_win() -> None:
    value = load_yaml("""
base: &base {a: 1, b: 1}
mid: &mid {<<: *base, a: 2}
top: {<<: *mid, c: 3}
first_listed_wins: {<<: [*base, *mid], b: 5}
""", "m.yaml")
    assert value["mid"] == {"a": 2, "b": 1}
    assert value["top"] == {"a": 2, "b": 1, "c": 3}  # PyYAML 6.0.4 alone gives a: 1 here
    assert value["first_listed_wins"] == {"a": 1, "b": 5}
    # Kept and read back the same.
    assert load_yaml("x: &x {a: 1}\ny: {<<: *x, b: 2}\n", "m.yaml") == {"x": {"a": 1}, "y": {"a": 1, "b": 2}}
    assert load_yaml("x: &x {a: 1}\ny: {<<: *x, b: 2}\n", "m.yaml") == {"x": {"a": 1}, "y": {"a": 1, "b": 2}}
    with pytest.raises(ConfigError, match="duplicate key 'b'"):
        load_yaml("x: &x {a: 1}\ny: {<<: *x, b: 2, b: 3}\n", "m.yaml")
    with pytest.raises(ConfigError, match="a merge .* takes a mapping or a list of mappings, not a scalar"):
        load_yaml("x: &x [1]\ny: {<<: *x, b: 2}\n", "m.yaml")


def test_a_matrix_file_shares_base_settings_with_a_merge_key(tmp_path: Path) -> None:
    from matrix import cells, spec

    path = tmp_path / "matrix.yaml"
    path.write_text("""
bases:
  py311: &common {image: "python:3.11-slim-bookworm", setup: ["apt-get update"]}
  py312: {<<: *common, image: "python:3.12-slim-bookworm", python: "3.12"}
packages: {numpy: ["1.26.4"]}
""")
    s = spec.load(path)
    assert s.base("py312").setup == s.base("py311").setup == ("apt-get update",)
    assert s.base("py312").image == "python:3.12-slim-bookworm" and s.base("py312").python == "3.12"
    assert [c.id for c in cells.plan(s).cells] == ["py311-numpy1.26.4-together", "py312-numpy1.26.4-together"]


def test_a_text_with_credentials_is_never_kept() -> None:
    import hashlib

    secret = "install: {index_url: 'https://alice:hunter2@pypi.corp/simple'}\n"
    # What an earlier version kept under the text's plain hash is removed on the next read.
    old = cache_root() / "parsed" / f"{hashlib.sha256(secret.encode()).hexdigest()}.json"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps({"install": {"index_url": "https://alice:hunter2@pypi.corp/simple"}}))
    before = kept()
    for _ in range(2):
        assert load_yaml(secret, "s.yaml") == {"install": {"index_url": "https://alice:hunter2@pypi.corp/simple"}}
    assert kept() == [n for n in before if n != old.name]
    where = cache_root() / "parsed"
    assert not any("hunter2" in p.read_text() for p in where.glob("*"))
    load_yaml("install: {index_url: 'https://pypi.corp/simple'}\n", "s.yaml")
    assert len(kept()) == len(before)  # a text without credentials is kept as before


def test_parsed_documents_unused_for_a_month_go_when_a_new_one_is_kept(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    from matrix import inputs

    monkeypatch.setenv("COMPAT_MATRIX_CACHE", str(tmp_path))
    inputs.load_yaml("a: 1\n", "old.yaml")
    inputs.load_yaml("b: 1\n", "used.yaml")
    (old, used) = sorted((tmp_path / "parsed").glob("*.json"), key=lambda p: p.read_text())
    month_ago = time.time() - inputs.PRUNE_AFTER_S - 60
    for p in (old, used):
        os.utime(p, (month_ago, month_ago))
    assert inputs.load_yaml("b: 1\n", "used.yaml") == {"b": 1}  # read: in use again
    inputs.load_yaml("c: 1\n", "new.yaml")  # kept: the unused one goes
    assert not old.exists() and used.exists() and len(list((tmp_path / "parsed").glob("*.json"))) == 2
