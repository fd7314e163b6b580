"""The core sweep on the real engine and the real package index (issue 2's acceptance matrix)."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import docker
import pytest

from matrix.backends.docker import CACHE_VOLUME
from matrix.backends.engine import RUN_LABEL, DockerEngine

MATRIX = """
bases:
  # python: "3.11" is python3.11 in the image, and pyenv's 3.11 for the venv backend.
  bookworm-py311: {{image: "{base}", python: "3.11"}}
packages:
  numpy: ["1.26.4", "2.2.6"]
  scipy: ["1.11.4"]
modes: [together, layered]
layered_order: [scipy, numpy]
include:
  # numpy 1.22.4 has no wheel for CPython 3.11 (the first cp311 wheels came with 1.23.2).
  - {{base: bookworm-py311, mode: together, numpy: "1.22.4"}}
limits: {{timeout_s: 120, memory: 2g}}
"""


def compat_matrix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", *args], capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def config(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "matrix.yaml"
    p.write_text(textwrap.dedent(MATRIX.format(base=base_image)))
    return p


@pytest.fixture(scope="module")
def sweep(config: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    results = tmp_path_factory.mktemp("results")
    return compat_matrix("run", "--config", str(config), "--results", str(results), "--backend", "docker"), results


def rows(results: Path) -> dict[str, dict[str, str]]:
    with open(results / "matrix.csv", newline="") as f:
        return {r["cell"]: r for r in csv.DictReader(f)}


def test_acceptance_matrix_outcomes(sweep: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, results = sweep
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = rows(results)
    prefix = "bookworm-py311-numpy"
    assert {cell: r["outcome"] for cell, r in got.items()} == {
        f"{prefix}1.26.4-scipy1.11.4-together": "pass",
        f"{prefix}1.26.4-scipy1.11.4-layered": "pass",
        f"{prefix}2.2.6-scipy1.11.4-together": "resolve-conflict",
        f"{prefix}2.2.6-scipy1.11.4-layered": "import-error",
        "bookworm-py311-numpy1.22.4-together": "no-wheel",
    }
    broken = got[f"{prefix}2.2.6-scipy1.11.4-layered"]
    assert "numpy.dtype size changed" in broken["error"]
    # layered really forced numpy over the one scipy pulled in.
    assert broken["installed_numpy"] == "2.2.6" and broken["installed_scipy"] == "1.11.4"
    conflict = got[f"{prefix}2.2.6-scipy1.11.4-together"]["error"]
    assert "scipy==1.11.4 depends on numpy" in conflict and "<1.28.0" in conflict
    assert "numpy==1.22.4" in got["bookworm-py311-numpy1.22.4-together"]["error"]
    assert got[f"{prefix}1.26.4-scipy1.11.4-together"]["python"].startswith("3.11")
    assert "2 pass, 1 import-error, 1 resolve-conflict, 1 no-wheel" in proc.stdout


def test_markdown_and_logs(sweep: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, results = sweep
    md = (results / "matrix.md").read_text()
    assert "| numpy 2.2.6, scipy 1.11.4" in md and "❌" in md and "⛔" in md and "## Legend" in md
    logs = results / "logs" / "bookworm-py311-numpy2.2.6-scipy1.11.4-layered"
    install_log = (logs / "install.log").read_text()
    assert "--no-deps numpy==2.2.6" in install_log and " + numpy==2.2.6" in install_log
    assert "dtype size changed" in (logs / "probes.jsonl").read_text()


def test_no_object_of_the_run_is_left(sweep: tuple[subprocess.CompletedProcess[str], Path],
                                      engine: DockerEngine, base_image: str) -> None:
    proc, _ = sweep
    run_id = proc.stdout.split()[2].rstrip(":")
    c = engine.client
    assert not c.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    assert not c.images.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    # Nor its cells' venvs on the package cache volume.
    left = c.containers.run(base_image, ["ls", "-A", "/cache/venvs"], volumes={CACHE_VOLUME: {"bind": "/cache",
                            "mode": "ro"}}, remove=True, labels={RUN_LABEL: "integration-look"}, network_mode="none")
    assert run_id not in left.decode().split()


def test_keep_keeps_the_venv_and_reproduce_rebuilds_the_same_verdict(
    config: Path, tmp_path: Path, engine: DockerEngine
) -> None:
    cell = "bookworm-py311-numpy2.2.6-scipy1.11.4-layered"
    # reproduce: the printed context, built by hand the way a user would, breaks the same way.
    ctx = tmp_path / "ctx"
    rep = compat_matrix("reproduce", "--config", str(config), cell, "--write", str(ctx))
    assert rep.returncode == 0, rep.stderr
    label = {RUN_LABEL: "integration-reproduce"}
    client: docker.DockerClient = engine.client
    try:
        image, _ = client.images.build(path=str(ctx), tag="compat-matrix-repro:test", rm=True, forcerm=True,
                                       network_mode="host", labels=label)
        out = client.containers.run(
            image.id, ["/opt/compat-matrix/venv/bin/python", "-c", "import scipy.stats"],
            network_mode="none", remove=True, stderr=True, stdout=True, labels=label,
        )
        pytest.fail(f"import scipy.stats should have failed, got {out!r}")
    except docker.errors.ContainerError as e:
        assert b"numpy.dtype size changed" in (e.stderr or b"")
    finally:
        engine.remove_labelled("integration-reproduce")

    results = tmp_path / "results"
    cell = "bookworm-py311-numpy1.26.4-scipy1.11.4-together"
    proc = compat_matrix("run", "--config", str(config), "--results", str(results), "--select", cell, "--keep",
                         "--rerun")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = proc.stdout.split()[2].rstrip(":")
    try:
        got = rows(results)  # the table is the matrix: the other cells show as not run
        assert got[cell]["outcome"] == "pass"
        assert {r["outcome"] for c, r in got.items() if c != cell} == {"not-run"}
        hint = (results / "logs" / cell / "venv-path").read_text()
        venv, look = hint.split()[0], hint.splitlines()[1].split()
        assert look[:4] == ["docker", "run", "--rm", "-it"]
        # The kept venv, on the cache volume, imports its packages, as the hint says it can.
        out = client.containers.run(look[6], [f"{venv}/bin/python", "-c", "import numpy; print(numpy.__version__)"],
                                    volumes={look[5].split(":")[0]: {"bind": look[5].split(":")[1], "mode": "ro"}},
                                    network_mode="none", remove=True, labels={RUN_LABEL: run_id})
        assert out.strip() == b"1.26.4"
        # The run's directory is the top of a hierarchy (TOPDIR) where the volume's file system has
        # the flag (ext2/3/4): its venvs are spread over the file system's block groups.
        flags = ("import fcntl, os, struct, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
                 "print(struct.unpack('i', fcntl.ioctl(fd, 0x80086601, struct.pack('i', 0)))[0] & 0x20000)")
        out = client.containers.run(look[6], ["sh", "-c", 'stat -f -c %T "$1"; python3 -c "$2" "$1"', "-",
                                              venv.rsplit("/", 1)[0], flags],
                                    volumes={look[5].split(":")[0]: {"bind": look[5].split(":")[1], "mode": "ro"}},
                                    network_mode="none", remove=True, labels={RUN_LABEL: run_id})
        kind, topdir = out.decode().split()
        assert topdir == ("131072" if kind.startswith("ext") else "0"), out
    finally:
        engine.remove_labelled(run_id)


def test_docker_and_venv_backends_agree(sweep: tuple[subprocess.CompletedProcess[str], Path], config: Path,
                                        tmp_path: Path) -> None:
    _, docker_results = sweep
    proc = compat_matrix("run", "--config", str(config), "--results", str(tmp_path), "--backend", "venv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    in_docker, in_venv = rows(docker_results), rows(tmp_path)
    assert set(in_docker) == set(in_venv)
    for cell, row in in_docker.items():
        assert (row["backend"], in_venv[cell]["backend"]) == ("docker", "venv")
        assert row["outcome"] == in_venv[cell]["outcome"], cell
        assert row["installed_numpy"] == in_venv[cell]["installed_numpy"], cell
    broken = "bookworm-py311-numpy2.2.6-scipy1.11.4-layered"
    assert all("numpy.dtype size changed" in r[broken]["error"] for r in (in_docker, in_venv))


def test_a_base_without_its_python_is_every_cells_build_error(base_image: str, tmp_path: Path) -> None:
    config = tmp_path / "matrix.yaml"
    config.write_text(textwrap.dedent(f"""
        bases:
          nopy: {{image: "{base_image}", python: "3.99"}}
        packages: {{numpy: ["1.26.4", "2.2.6"]}}
        """))
    proc = compat_matrix("run", "--config", str(config), "--results", str(tmp_path / "r"), "--backend", "docker")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = rows(tmp_path / "r")
    assert [r["outcome"] for r in got.values()] == ["build-error"] * 2
    assert all("cannot run Python: python3.99" in r["error"] and "not found" in r["error"] for r in got.values())
