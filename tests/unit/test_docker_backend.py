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


INSTALLED = RunResult(0, "", "")
BUILT = BuildResult(True, "")


class FakeEngine:
    description = "fake"

    def __init__(self, install: RunResult | Exception = INSTALLED, base_error: str | None = None,
                 build: BuildResult = BUILT) -> None:
        self._install, self._base_error, self._build = install, base_error, build
        self.removed: list[tuple[str, str | None]] = []
        self.execs: list[tuple[list[str], dict[str, str]]] = []
        self.files: dict[str, tuple[bytes, int]] = {}
        self.built: list[str] = []

    def ensure_image(self, ref: str) -> str | None:
        return self._base_error

    def image_id(self, ref: str) -> str | None:
        if ref.startswith("compat-matrix-base:") and ref not in self.built:
            return None
        return "sha256:" + "0" * 64

    def build(self, context_dir: Path, tag: str) -> BuildResult:
        assert (context_dir / "Dockerfile").is_file()
        self.built.append(tag)
        return self._build

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        assert labels == {"org.compat-matrix.run": "cache"}

    def start(self, image: str, command: list[str], *, labels: dict[str, str], volumes: dict[str, str]) -> str:
        return "bench"

    def running(self, container: str) -> tuple[bool, str]:
        return True, ""

    def put_files(self, container: str, files: dict[str, Path | bytes], mode: int = 0o644) -> None:
        for path, content in files.items():
            self.files[path] = (content if isinstance(content, bytes) else content.read_bytes(), mode)

    def exec(self, container: str, command: list[str], environment: dict[str, str] | None = None) -> RunResult:
        self.execs.append((command, environment or {}))
        if command[0].endswith("/uv") and command[1] == "pip":
            if isinstance(self._install, Exception):
                raise self._install
            return self._install
        return RunResult(0, "", "")

    def run(self, image, command, **kw) -> RunResult:  # noqa: ANN001
        raise EngineFault("daemon went away")

    def remove_labelled(self, run_id: str, cell: str | None = None, *, settle_s: float = 0.0) -> int:
        self.removed.append((run_id, cell))
        return 0

    def runs_of_host(self, host: str) -> set[str]:
        return set()

    def alive(self) -> bool:
        return self.is_alive

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    is_alive = True


def test_engine_fault_is_infra_error_and_the_runs_venvs_still_go(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(EngineFault("running uv in bench: connection refused"))
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    rec = backend.run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "connection refused" in rec.error
    backend.close(interrupted=False)
    script = engine.execs[-1][0][-1]
    assert engine.execs[-1][0][:2] == ["sh", "-c"] and script.endswith("rm -rf /opt/compat-matrix/cache/venvs/run1")
    assert engine.removed == [("run1", None)]


def test_failed_install_is_classified_and_credentials_stay_in_a_private_file(make_spec, tmp_path: Path) -> None:
    out = ("  × No solution found when resolving dependencies:\n  ╰─▶ Because there is no version of "
           "numpy==1.26.4 and you require numpy==1.26.4, we can conclude that your requirements are unsatisfiable.\n"
           "  error: https://alice:s3cret@pypi.corp.invalid/simple/numpy/ said 404\n")
    engine = FakeEngine(RunResult(1, "", out))
    logs = tmp_path / "logs"
    logs.mkdir()
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, logs)
    assert rec.outcome is Outcome.NO_WHEEL
    for f in logs.iterdir():
        assert "s3cret" not in f.read_text(), f.name
    for command, env in engine.execs:
        assert "s3cret" not in " ".join(command) + str(env)
    installs = [(c, e) for c, e in engine.execs if c[1:2] == ["pip"]]
    assert installs and all(e == {"UV_CONFIG_FILE": "/opt/compat-matrix/uv.toml"} for _, e in installs)
    conf, mode = engine.files["/opt/compat-matrix/uv.toml"]
    assert b'index-url = "https://alice:s3cret@pypi.corp.invalid/simple"' in conf and mode == 0o600


def test_missing_base_image_is_infra_error_for_every_cell_of_it(make_spec, tmp_path: Path) -> None:
    engine = FakeEngine(base_error="base image python:3.11-slim is not on the engine")
    rec = DockerBackend(engine, make_spec(MATRIX), "run1").run_cell(CELL, tmp_path)
    assert rec.outcome is Outcome.INFRA_ERROR and "not on the engine" in rec.error


def test_the_prefix_image_is_built_once_and_a_failed_setup_is_every_cells_build_error(
        make_spec, tmp_path: Path) -> None:
    engine = FakeEngine()
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    backend.run_cell(CELL, tmp_path)
    backend.run_cell(Cell("b", "layered", (("numpy", "1.26.4"),)), tmp_path)
    assert len(engine.built) == 1
    failing = FakeEngine(build=BuildResult(False, "Step 3/7 : RUN apt-get install -y python3\nE: Unable to locate "
                                                  "package python3\n", "returned a non-zero code: 100"))
    backend = DockerBackend(failing, make_spec(MATRIX), "run2")
    recs = [backend.run_cell(c, tmp_path) for c in (CELL, Cell("b", "layered", (("numpy", "1.26.4"),)))]
    assert [r.outcome for r in recs] == [Outcome.BUILD_ERROR] * 2 and "setup failed" in recs[0].error
    assert len(failing.built) == 1


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

    engine = FakeEngine(EngineFault("running uv in bench: connection refused"))
    engine.is_alive = False
    backend = DockerBackend(engine, make_spec(MATRIX), "run1")
    cells = (CELL, Cell("b", "layered", (("numpy", "1.26.4"),)))
    result = sweep(cells, backend, tmp_path, "run1", echo=lambda _: None, sleep=lambda _: None)
    assert len(result.records) == 1
    assert result.records[0].error.startswith("the Docker Engine stopped answering")
    assert result.stopped and "stopped answering" in result.stopped
