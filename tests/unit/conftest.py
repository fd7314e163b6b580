from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from matrix import spec
from matrix.backends import interpreters


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[[str], spec.Spec]:
    def make(text: str) -> spec.Spec:
        p = tmp_path / "matrix.yaml"
        p.write_text(textwrap.dedent(text))
        return spec.load(p)

    return make


def interpreter(version: str) -> interpreters.Interpreter:
    """pyenv's python<version>: our machines have 3.6-3.13; missing, the test fails on CI and skips
    elsewhere."""
    found = interpreters.find(version)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"python{version} is missing (pyenv has 3.6-3.13 on our machines)")
        pytest.skip(f"no python{version} here")
    return found
