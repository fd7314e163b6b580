"""A new run removes what dead runs left (SIGKILL skips every cleanup), never a live run's."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from matrix import locks, spec
from matrix.docker_backend import DockerBackend
from matrix.engine import HOST_LABEL, RUN_LABEL, DockerEngine


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_dead_runs_are_reaped_and_live_ones_kept(engine: DockerEngine, base_image: str, tmp_path: Path) -> None:
    api = engine.client.api
    host = socket.gethostname()
    made = {}
    for run_id in ("dead-run", "live-run"):
        made[run_id] = api.create_container(base_image, ["true"],
                                            labels={RUN_LABEL: run_id, HOST_LABEL: host})["Id"]
    live = locks.hold_run("live-run")
    try:
        (tmp_path / "m.yaml").write_text(textwrap.dedent(f"""
            bases: {{b: {{image: "{base_image}"}}}}
            packages: {{numpy: ["1.26.4"]}}
        """))
        backend = DockerBackend(engine, spec.load(tmp_path / "m.yaml"), "new-run")
        notes = backend.start()
        assert notes == ["removed 1 object(s) left on the engine by dead run dead-run"]
        ids = {c["Id"] for c in api.containers(all=True, filters={"label": f"{HOST_LABEL}={host}"})}
        assert made["live-run"] in ids and made["dead-run"] not in ids
    finally:
        live.release()
        engine.remove_labelled("live-run")
        engine.remove_labelled("dead-run")


def test_two_sweeps_at_once_on_one_engine_keep_out_of_each_others_way(base_image: str, tmp_path: Path,
                                                                       engine: DockerEngine) -> None:
    import subprocess
    import sys

    (tmp_path / "m.yaml").write_text(f'bases: {{b: {{image: "{base_image}"}}}}\npackages: {{numpy: ["1.26.4"]}}\n')
    procs = [subprocess.Popen([sys.executable, "-m", "matrix", "run", "--config", str(tmp_path / "m.yaml"),
                               "--results", str(tmp_path / f"r{i}"), "--backend", "docker"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (1, 2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("1/1 cells: 1 pass" in out for out in outs)
    run_ids = [out.split()[2].rstrip(":") for out in outs]
    assert run_ids[0] != run_ids[1]
    for run_id in run_ids:
        assert not engine.client.api.images(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
