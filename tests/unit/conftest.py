from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from matrix import spec


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[[str], spec.Spec]:
    def make(text: str) -> spec.Spec:
        p = tmp_path / "matrix.yaml"
        p.write_text(textwrap.dedent(text))
        return spec.load(p)

    return make
