"""The docker backend's decisions, with a fake engine standing in for faults a real one will not
produce on demand (a daemon that dies mid-build). Real builds are in tests/integration."""

from __future__ import annotations

from pathlib import Path

from matrix import probing
from matrix.cells import Cell
from matrix.classify import Outcome
from matrix.docker_backend import DockerBackend
from matrix.engine import BuildResult, EngineFault
from matrix.probing import RunResult, judge

MATRIX = """
bases: {b: {image: "python:3.11-slim"}}
packages: {numpy: ["1.26.4"]}
install: {ca_bundle: none, index_url: "https://alice:s3cret@pypi.corp.invalid/simple"}
"""
CELL = Cell("b", "together", (("numpy", "1.26.4"),))


class FakeEngine:
    description = "fake"

    def __init__(self, build: BuildResult | Exception, base_error: str | None = None) -> None:
        self._build, self._base_error = build, base_error
        self.removed: list[tuple[str, str | None]] = []

    def ensure_image(self, ref: str) -> str | None:
        return self._base_error

    def build(self, context_dir: Path, tag: str) -> BuildResult:
        assert (context_dir / "Dockerfile").is_file()
        if isinstance(self._build, Exception):
            raise self._build
        return self._build

    def run(self, image, command, **kw) -> RunResult:  # noqa: ANN001
        raise EngineFault("daemon went away")

    def remove_labelled(self, run_id: str, cell: str | None = None, *, settle_s: float = 0.0) -> int:
        self.removed.append((run_id, cell))
        return 0

    def alive(self) -> bool:
        return self.is_alive

    def image_id(self, ref: str) -> str | None:
        return "sha256:" + "0" * 64

    is_alive = True


def test_engine_fault_is_infra_error_and_the_cell_is_still_cleaned(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(EngineFault("build of x failed in the engine: connection refused"))
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "connection refused" in rec.error
    assert engine.removed and engine.removed[0][0] == "run1"


def test_failed_build_is_classified_and_logs_carry_no_credentials(make_spec, tmp_path: Path) -> None:
    log = ("Step 5/6 : RUN pip install --index-url https://alice:s3cret@pypi.corp.invalid/simple numpy\n"
           "ERROR: Could not find a version that satisfies the requirement numpy==1.26.4 (from versions: 1.0)\n"
           "ERROR: No matching distribution found for numpy==1.26.4\n")
    engine = FakeEngine(BuildResult(ok=False, log=log, error="returned a non-zero code: 1"))
    logs = tmp_path / "logs"
    logs.mkdir()
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, logs)
    assert rec.outcome is Outcome.NO_WHEEL
    for f in logs.iterdir():
        assert "s3cret" not in f.read_text(), f.name
    dockerfile = (logs / "Dockerfile").read_text()
    # the credentialed index is not even on the RUN line: each step fetches a pip config instead
    assert "pypi.corp.invalid" not in dockerfile and "PIP_CONFIG_FILE=" in dockerfile


def test_missing_base_image_is_infra_error_for_every_cell_of_it(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(BuildResult(True, ""), base_error="base image python:3.11-slim is not on the engine")
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "not on the engine" in rec.error


def test_judge_run() -> None:
    ok = probing.DriverReport(python="3.11.2", probes=[{"probe": "imports", "returncode": 0,
                                                        "result": {"status": "pass"}}], complete=True)
    assert judge(RunResult(0, "", ""), ok, "4g").outcome is Outcome.PASS
    assert judge(RunResult(137, "", "", oom_killed=True), ok, "4g").outcome is Outcome.CRASH
    partial = probing.DriverReport(python="3.11.2", probes=ok.probes, complete=False)
    assert judge(RunResult(None, "", "", timed_out=True), partial, "4g").outcome is Outcome.TIMEOUT
    assert judge(RunResult(137, "", ""), partial, "4g").outcome is Outcome.CRASH
    nothing = probing.DriverReport()
    v = judge(RunResult(127, "", "exec: python: not found\n"), nothing, "4g")
    assert v.outcome is Outcome.BUILD_ERROR and "not found" in v.error


def test_a_dead_engine_is_named_so_the_sweep_stops(make_spec, tmp_path: Path) -> None:
    from matrix.sweep import sweep

    engine = FakeEngine(EngineFault("build of x failed in the engine: connection refused"))
    engine.is_alive = False
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    cells = (CELL, Cell("b", "layered", (("numpy", "1.26.4"),)))
    result = sweep(cells, backend, tmp_path, "run1", echo=lambda _: None, sleep=lambda _: None)
    assert len(result.records) == 1
    assert result.records[0].error.startswith("the Docker Engine stopped answering")
    assert result.stopped and "stopped answering" in result.stopped
