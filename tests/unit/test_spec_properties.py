"""Property tests over the matrix loader: whatever the file holds, the answer is a Spec or the
tool's own ConfigError (exit 2), never a stray exception, and never anything executed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matrix import cells, spec
from matrix.errors import ConfigError

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["1.26.4", "2.2.6", "python:3.11", "3.12", "together",
                                                           "layered", "numpy", "scipy", "auto", "none", "4g"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(spec.TOP_KEYS)),
                                                 inner, max_size=4)), max_leaves=20)
top = st.dictionaries(st.sampled_from([*spec.TOP_KEYS, "other"]), values, max_size=8)
PATH = Path("matrix.yaml")


def check(text: str) -> None:
    try:
        s = spec.parse(text, PATH)
    except ConfigError as e:
        assert str(e).startswith("matrix.yaml")
        return
    cells.plan(s)  # a valid spec always plans


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(top)
def test_any_structure_is_a_spec_or_a_config_error(data: dict) -> None:
    check(yaml.safe_dump(data))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_spec_or_a_config_error(text: str) -> None:
    check(text)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_a_pin_is_either_a_plain_version_or_refused(pin: str) -> None:
    text = yaml.safe_dump({"bases": {"b": {"image": "python:3.11"}}, "packages": {"numpy": [pin]}})
    try:
        s = spec.parse(text, PATH)
    except ConfigError as e:
        assert e.key.startswith("packages.numpy")
        return
    (version,) = s.packages[0][1]
    # Nothing that a shell or an installer would read as more than a version gets through.
    assert not set(version) & set(" \t\n;&|$`'\"<>(){}[]\\,=@#*?~!") - {"!"}


def limits(body: str) -> spec.Spec:
    head = 'bases: {b: {image: "python:3.11"}}\npackages: {numpy: ["1.26.4"]}\n'
    return spec.parse(f"{head}limits: {body}\n", PATH)


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "9" * 400, "0", "-1", "86401", "1e400", "true",
                                   '"300"', "[300]"])
def test_a_timeout_that_is_not_a_usable_number_of_seconds_is_exit_2_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        limits(f"{{timeout_s: {value}}}")
    assert info.value.key == "limits.timeout_s" and info.value.exit_code == 2
    assert "at most 86400" in info.value.problem and len(str(info.value)) < 300


def test_the_timeout_bounds_themselves_are_valid() -> None:
    assert limits("{timeout_s: 86400}").limits.timeout_s == 86400.0
    assert limits("{timeout_s: 0.5}").limits.timeout_s == 0.5


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(), st.integers(min_value=-(10**500), max_value=10**500)))
def test_any_number_for_the_timeout_is_a_finite_bounded_limit_or_refused(value: float | int) -> None:
    text = yaml.safe_dump({"bases": {"b": {"image": "python:3.11"}}, "packages": {"numpy": ["1.26.4"]},
                           "limits": {"timeout_s": value}})
    try:
        s = spec.parse(text, PATH)
    except ConfigError as e:
        assert e.key == "limits.timeout_s"
        assert not 0 < value <= spec.MAX_TIMEOUT_S
        return
    assert 0 < s.limits.timeout_s <= spec.MAX_TIMEOUT_S


@pytest.mark.parametrize(("value", "ok"), [('"4g"', True), ('"6m"', True), ('"6291456"', True), ('"512k"', False),
                                           ("0", False), ('"99999999999g"', False), ('"' + "9" * 400 + 'g"', False),
                                           ('"4 g"', False), ('"-4g"', False)])
def test_a_memory_limit_is_one_the_engine_takes(value: str, ok: bool) -> None:
    if ok:
        assert limits(f"{{memory: {value}}}").limits.memory == value.strip('"').lower()
        return
    with pytest.raises(ConfigError) as info:
        limits(f"{{memory: {value}}}")
    assert info.value.key == "limits.memory" and len(str(info.value)) < 300


def test_the_command_line_refuses_a_nan_timeout(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    matrix = tmp_path / "matrix.yaml"
    matrix.write_text('bases: {b: {image: "python:3.11"}}\npackages: {numpy: ["1.26.4"]}\nlimits: {timeout_s: .nan}\n')
    done = subprocess.run([sys.executable, "-m", "matrix", "list", "--config", str(matrix)], capture_output=True,
                          text=True, timeout=120, env=os.environ.copy(), check=False)
    assert done.returncode == 2 and "limits.timeout_s" in done.stderr and "Traceback" not in done.stderr


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=list("&*ab<:[]{}, -\n01!|>'\"?."), max_size=200))
def test_any_text_of_anchors_aliases_and_merges_is_a_spec_or_a_config_error(text: str) -> None:
    check(text)
