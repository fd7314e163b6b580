"""Credentials in an index URL reach the installer and nothing else: not the logs, not the
results, not a command line, not `docker history` or `inspect` of any image or container."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

from matrix.backends.engine import ROLE_LABEL, RUN_LABEL, WORKBENCH, DockerEngine

SECRET = "s3cr3t-token-do-not-leak"


def test_index_credentials_never_leave_the_install_step(engine: DockerEngine, base_image: str,
                                                        tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(f"""
        bases: {{b: {{image: "{base_image}"}}}}
        packages: {{scipy: ["1.11.4"], numpy: ["1.26.4"]}}
        modes: [layered]
        install: {{index_url: "https://compat-user:{SECRET}@pypi.org/simple"}}
    """))
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "matrix", "run", "--config", str(tmp_path / "matrix.yaml"),
                           "--results", str(results), "--backend", "docker", "--keep"],
                          capture_output=True, text=True, timeout=1200)
    run_id = proc.stdout.split()[2].rstrip(":")
    api = engine.client.api
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "1/1 cells: 1 pass" in proc.stdout  # the credentials did reach pip
        assert SECRET not in proc.stdout + proc.stderr
        for f in results.rglob("*"):
            if f.is_file():
                assert SECRET not in f.read_text(errors="replace"), f
        # Everything the run made or used on the engine: its workbench (kept by --keep) and the
        # cached prefix image; the credentials live only in the workbench's private uv.toml.
        containers = api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
        assert containers
        for c in containers:
            assert SECRET not in json.dumps(api.inspect_container(c["Id"])), "docker inspect (container)"
        images = {c["ImageID"] for c in containers}
        for image in images:
            assert SECRET not in json.dumps(api.history(image)), "docker history"
            assert SECRET not in json.dumps(api.inspect_image(image)), "docker inspect"
            out = engine.client.containers.run(image, ["ls", "/opt/compat-matrix"], remove=True,
                                               network_mode="none", labels={RUN_LABEL: run_id})
            assert b"uv.toml" not in out
        # The workbench ended with its run (its life is the run's: engine.start); its files stay.
        [bench] = [c for c in containers if c["Labels"].get(ROLE_LABEL) == WORKBENCH]
        chunks, _ = api.get_archive(bench["Id"], "/opt/compat-matrix/uv.toml")
        conf = tarfile.open(fileobj=io.BytesIO(b"".join(chunks))).getmember("uv.toml")
        assert (conf.mode & 0o777, conf.uid) == (0o600, 0)
    finally:
        engine.remove_labelled(run_id)
