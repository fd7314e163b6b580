"""A team's own Dockerfile as a base (docker backend, real engine, real index): the pins go on top of
what its image has installed, so the v76 accident shows: the image's scipy 1.11.4 under numpy 2.2.6."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from matrix.backends.engine import RUN_LABEL, DockerEngine

DOCKERFILE = """FROM {base}
COPY ca.pem /opt/ca.pem
ENV PIP_CERT=/opt/ca.pem PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
RUN pip install --only-binary=:all: scipy==1.11.4
"""
MATRIX = """
bases:
  v76: {dockerfile: docker/Dockerfile.v76, python: /opt/venv/bin/python}
  broken: {dockerfile: docker/Dockerfile.broken}
packages:
  numpy: ["1.26.4", "2.2.6"]
modes: [layered]
"""


def test_pins_go_on_top_of_the_teams_image(base_image: str, engine: DockerEngine, tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    docker.mkdir()
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    shutil.copyfile(ca, docker / "ca.pem")
    (docker / "Dockerfile.v76").write_text(DOCKERFILE.format(base=base_image))
    (docker / "Dockerfile.broken").write_text(f"FROM {base_image}\nCOPY missing.txt /x\n")
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(tmp_path / "matrix.yaml"),
                           "--results", str(results), "--backend", "docker"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    records = {r["cell"]: r for r in map(json.loads, (results / "records.jsonl").read_text().splitlines())}
    fine, broken = records["v76-numpy1.26.4-layered"], records["v76-numpy2.2.6-layered"]
    assert fine["outcome"] == "pass" and fine["installed"] == {"numpy": "1.26.4", "scipy": "1.11.4"}
    assert broken["outcome"] == "import-error" and "numpy.dtype size changed" in broken["error"]
    assert broken["installed"]["scipy"] == "1.11.4"  # the image's, probed though the cell never pinned it
    for cell in ("broken-numpy1.26.4-layered", "broken-numpy2.2.6-layered"):
        assert records[cell]["outcome"] == "build-error" and "Dockerfile.broken" in records[cell]["error"]
    run_id = fine["run_id"]
    api = engine.client.api
    assert api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}) == []
    assert api.images(filters={"label": f"{RUN_LABEL}={run_id}"}) == []  # the base image is kept as a cache
