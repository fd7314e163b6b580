"""Integration fixtures: the real Docker Engine and the local base image.

Without them these tests skip on a laptop and fail on CI (CI is set there): a suite that skips
its real tests on CI would pass while proving nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from matrix.backends.engine import PROBE, ROLE_LABEL, RUN_LABEL, DockerEngine
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


def driver_runs(engine: DockerEngine, run_id: str) -> bool:
    """Whether a probe driver runs in one of the run's probe containers (its probers, or a
    one-shot container where the engine gives no probers)."""
    api = engine.client.api
    for c in api.containers(filters={"label": [f"{RUN_LABEL}={run_id}", f"{ROLE_LABEL}={PROBE}"]}):
        try:  # -ww: whole command lines (the driver's path is longer than ps's default column)
            rows = api.top(c["Id"], ps_args="-o pid,args -ww").get("Processes") or []
        except Exception:  # noqa: BLE001 - gone meanwhile: not this one
            continue
        if any("_driver.py" in " ".join(map(str, row)) for row in rows):
            return True
    return False


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
    """After the whole run no run's container or image may remain; only the caches that outlive
    runs (prefix images, the package cache volume), and `compat-matrix clean` removes those."""
    yield
    try:
        engine = DockerEngine()
    except EngineUnavailable:
        return  # no engine, nothing could have been left
    client = engine.client
    try:
        def labelled() -> tuple[list[str], list[str], list[str]]:
            return ([f"{c.name} ({c.labels[RUN_LABEL]})" for c in client.containers.list(
                        all=True, filters={"label": RUN_LABEL})],
                    [f"{i.tags or i.id} ({i.labels[RUN_LABEL]})" for i in client.images.list(
                        all=True, filters={"label": RUN_LABEL})],
                    [v.name for v in client.volumes.list(filters={"label": RUN_LABEL})])

        containers, images, volumes = labelled()
        left = [o for o in containers + images if not o.endswith("(cache)")]
        assert not left, f"left behind: {left}"
        cleaned = subprocess.run([sys.executable, "-m", "matrix", "clean", "--engine-only"], capture_output=True,
                                 text=True, timeout=300)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert labelled() == ([], [], []), "compat-matrix clean left cached objects"
    finally:
        client.close()
