"""Property tests over the matrix loader: whatever the file holds, the answer is a Spec or the
tool's own ConfigError (exit 2), never a stray exception, and never anything executed."""

from __future__ import annotations

from pathlib import Path

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
