"""Integration fixtures: the real Docker Engine and the local base image.

Without them these tests skip on a laptop and fail on CI (CI is set there): a suite that skips
its real tests on CI would pass while proving nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from matrix.engine import RUN_LABEL, DockerEngine
from matrix.errors import EngineUnavailable

BASE = os.environ.get("COMPAT_MATRIX_TEST_BASE", "compat-matrix-test/bookworm-py311:local")


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (on CI the integration tests must run; see .ci/engine-up.sh)")
    pytest.skip(why)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    try:
        eng = DockerEngine()
    except EngineUnavailable as e:
        _unavailable(str(e))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def base_image(engine: DockerEngine) -> str:
    if not engine.has_image(BASE):
        _unavailable(f"the test base image {BASE} is missing: run .ci/base-images.sh")
    return BASE


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After the whole run, no container or image carrying the run label may remain."""
    yield
    try:
        engine = DockerEngine()
    except EngineUnavailable:
        return  # no engine, nothing could have been left
    client = engine.client
    try:
        containers = client.containers.list(all=True, filters={"label": RUN_LABEL})
        images = client.images.list(all=True, filters={"label": RUN_LABEL})
    finally:
        client.close()
    assert not containers and not images, (
        f"left behind: {[c.name for c in containers]} {[i.tags or i.id for i in images]}")
