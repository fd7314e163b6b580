from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from matrix import interpreters, spec


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[[str], spec.Spec]:
    def make(text: str) -> spec.Spec:
        p = tmp_path / "matrix.yaml"
        p.write_text(textwrap.dedent(text))
        return spec.load(p)

    return make


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the tool keeps between runs (verdicts, interpreter versions, bytecode) goes to a scratch
    directory, not the machine's ~/.cache."""
    before = os.environ.get("COMPAT_MATRIX_CACHE")
    os.environ["COMPAT_MATRIX_CACHE"] = str(tmp_path_factory.mktemp("compat-matrix-cache"))
    yield
    if before is None:
        os.environ.pop("COMPAT_MATRIX_CACHE", None)
    else:
        os.environ["COMPAT_MATRIX_CACHE"] = before


def interpreter(version: str) -> interpreters.Interpreter:
    """pyenv's python<version>: our machines have 3.6-3.13; missing, the test fails on CI and skips
    elsewhere."""
    found = interpreters.find(version)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"python{version} is missing (pyenv has 3.6-3.13 on our machines)")
        pytest.skip(f"no python{version} here")
    return found
