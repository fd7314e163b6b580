"""Fixtures for every test: the tool's caches kept apart from the machine's."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the tool keeps between runs (verdicts, interpreter versions, bytecode) goes to a scratch
    directory for the session, not the machine's ~/.cache (nor an earlier session's)."""
    before = os.environ.get("COMPAT_MATRIX_CACHE")
    os.environ["COMPAT_MATRIX_CACHE"] = str(tmp_path_factory.mktemp("compat-matrix-cache"))
    yield
    if before is None:
        os.environ.pop("COMPAT_MATRIX_CACHE", None)
    else:
        os.environ["COMPAT_MATRIX_CACHE"] = before
