"""`compat-matrix check` on the real engine: the seed's v74→v77 story as a series of Dockerfiles built
FROM the local base (no registry is reachable), installing from the real index through the TLS
proxy (its CA bundle is copied into each build context, as the prefix image does).

v74 pins the registry's fix; v75 installs the broken pair with --no-deps; v76 installs scipy 1.11.4,
then numpy 2.2.6 in a later RUN (the fix dropped); v77 builds FROM v74's image with no pins of its
own and removes pip (an inherited fix, an image without pip). Every command is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from matrix.backends.engine import CHECK, ROLE_LABEL, RUN_LABEL, DockerEngine

TAG = "compat-matrix-test-check"
HEADER = """FROM {base}
COPY ca.pem /opt/ca.pem
ENV PIP_CERT=/opt/ca.pem PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
"""
SERIES = {
    "Dockerfile.v74": HEADER + "RUN pip install numpy==1.24.3 scipy==1.10.1\n",
    "Dockerfile.v75": HEADER + "RUN pip install --no-deps numpy==2.2.6 scipy==1.11.4\n",
    # Line 5 resolves numpy 1.26.4 under scipy 1.11.4; line 7 replaces it.
    "Dockerfile.v76": HEADER + "RUN pip install scipy==1.11.4\n# The new pipeline wants a newer numpy.\n"
                               "RUN pip install \\\n    numpy==2.2.6\n",
    "Dockerfile.v77": f"FROM {TAG}:v74\nRUN pip uninstall -y pip\n",
}
REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"


def _check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", "check", "--registry", str(REGISTRY), "--tag", TAG,
                           *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _run_id(stdout: str) -> str:
    m = re.search(r"^compat-matrix check (\S+):", stdout, re.MULTILINE)
    assert m, stdout
    return m.group(1)


def _labelled(engine: DockerEngine, stdout: str) -> list[str]:
    """What the engine holds of the check that printed `stdout` (other runs may share the engine)."""
    client = engine.client
    mine = {"label": f"{RUN_LABEL}={_run_id(stdout)}"}
    return ([f"container {c.name}" for c in client.containers.list(all=True, filters=mine)]
            + [f"image {i.tags or i.id}" for i in client.images.list(all=True, filters=mine)])


def _records(results: Path) -> dict[str, dict[str, object]]:
    lines = (results / "records.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["cell"]: r for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    here = tmp_path_factory.mktemp("series")
    shutil.copyfile(ca, here / "ca.pem")
    for name, text in SERIES.items():
        (here / name).write_text(text.format(base=base_image), encoding="utf-8")
    return here


@pytest.fixture(scope="module")
def checked(series: Path, engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    results = tmp_path_factory.mktemp("results")
    # As the shell globs them (v100 would sort before v74 there): built in version order all the same.
    done = _check(*sorted(str(p) for p in series.glob("Dockerfile.v*")), "--results", str(results), cwd=series)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert _labelled(engine, done.stdout) == [], "the check left labelled objects behind"
    assert engine.image_id(f"{TAG}:v74") is None, "a built image outlived the check without --keep"
    return results, done.stdout


def test_series_verdicts_and_table(checked: tuple[Path, str]) -> None:
    results, _ = checked
    records = _records(results)
    assert {k: r["outcome"] for k, r in records.items()} == {
        "v74": "pass", "v75": "import-error", "v76": "import-error", "v77": "pass"}
    assert "numpy.dtype size changed" in str(records["v76"]["error"])
    assert records["v74"]["pins"] == {"numpy": "1.24.3", "scipy": "1.10.1"}
    # v77 has no pip, yet its installed distributions are read (importlib.metadata).
    assert records["v77"]["pins"] == {"numpy": "1.24.3", "scipy": "1.10.1"}
    cases = ET.parse(results / "junit.xml").getroot().iter("testcase")
    assert sorted(c.get("name") or "" for c in cases) == ["v74", "v75", "v76", "v77"]
    csv = (results / "matrix.csv").read_text(encoding="utf-8")
    assert "v76,Dockerfile.v76,dockerfile" in csv and "numpy_scipy_incompatibility" in csv


def test_lineage(checked: tuple[Path, str]) -> None:
    results, stdout = checked
    md = (results / "check.md").read_text(encoding="utf-8")
    assert "| v75 | import-error | none | v74 |" in md
    assert "| v76 | import-error | none | v74 |" in md
    assert "| v77 | pass | numpy_scipy_incompatibility (inherited through FROM) | v74 |" in md
    assert "| v74 | pass | numpy_scipy_incompatibility | — |" in md
    dropped = next(ln for ln in md.splitlines() if ln.startswith("- v76: fix not carried forward"))
    assert "numpy==1.24.3 scipy==1.10.1" in dropped and "was in v74" in dropped
    assert "RUN line 7 (`pip install numpy==2.2.6`)" in dropped
    v75 = next(ln for ln in md.splitlines() if ln.startswith("- v75: fix not carried forward"))
    assert "RUN line 5 (`pip install --no-deps numpy==2.2.6 scipy==1.11.4`)" in v75
    assert "fix not carried forward" in stdout


def test_drift(checked: tuple[Path, str]) -> None:
    results, _ = checked
    md = (results / "check.md").read_text(encoding="utf-8")
    assert ("- RUN line 7 (`pip install numpy==2.2.6`) replaced numpy 1.26.4 → 2.2.6 under scipy 1.11.4 "
            "(which requires numpy<1.28.0,>=1.21.6)") in md
    assert "- RUN line 5 (`pip install scipy==1.11.4`) added numpy 1.26.4; added scipy 1.11.4" in md
    assert "- RUN line 2 (`pip uninstall -y pip`) removed pip" in md
    # The venv's own pip came with line 4 (no install step), not with line 5.
    assert "added pip" not in md


def test_keep_keeps_the_built_image(series: Path, engine: DockerEngine, tmp_path: Path) -> None:
    done = _check(str(series / "Dockerfile.v74"), "--keep", "--results", str(tmp_path), cwd=series)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert engine.image_id(f"{TAG}:v74") is not None
        assert f"kept v74: {TAG}:v74" in done.stdout
        assert _records(tmp_path)["v74"]["outcome"] == "pass"
        # What it keeps (the image and its layers) carries the label of what outlives runs, which no
        # run reaps as a dead run's; nothing labelled with the check's own run is left.
        assert _labelled(engine, done.stdout) == []
        assert engine.client.images.get(f"{TAG}:v74").labels[RUN_LABEL] == "cache"
    finally:
        if engine.image_id(f"{TAG}:v74"):
            engine.client.images.remove(f"{TAG}:v74", force=True)


def test_distro_python_without_pip_and_a_broken_dockerfile(base_image: str, engine: DockerEngine,
                                                          tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile.broken").write_text(f"FROM {base_image}\nCOPY missing.txt /x\n", encoding="utf-8")
    done = _check(base_image, str(tmp_path / "ctx" / "Dockerfile.broken"), "--results", str(tmp_path / "r"),
                  cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    records = _records(tmp_path / "r")
    assert records["local"]["outcome"] == "pass"  # Debian's python3 (PEP 668), no pip
    assert str(records["local"]["python"]).startswith("3.11")
    assert records["broken"]["outcome"] == "build-error"
    assert "Dockerfile.broken did not build" in str(records["broken"]["error"])
    assert _labelled(engine, done.stdout) == []


def test_image_without_python(base_image: str, engine: DockerEngine, tmp_path: Path) -> None:
    rootfs = "compat-matrix-test/bookworm-rootfs:local"  # what .ci/base-images.sh makes the base from
    if engine.image_id(rootfs) is None:
        pytest.fail(f"{rootfs} is missing: run .ci/base-images.sh")
    done = _check(rootfs, "--results", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    record = _records(tmp_path)["local"]
    assert record["outcome"] == "build-error"
    assert record["error"].startswith(f"no Python runs in {rootfs}")


def test_bad_targets_are_exit_2(tmp_path: Path) -> None:
    done = _check(str(tmp_path / "Dockerfile.v99"), "--results", str(tmp_path / "r"), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no such Dockerfile" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()
    done = _check("bad;ref", "--results", str(tmp_path / "r"), cwd=tmp_path)
    assert done.returncode == 2 and "neither a file nor an image reference" in done.stderr


def test_sigterm_during_a_build_ends_143_and_leaves_nothing(base_image: str, engine: DockerEngine,
                                                          tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.slow").write_text(f"FROM {base_image}\nRUN sleep 120\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "matrix", "check", str(tmp_path / "Dockerfile.slow"),
                             "--results", str(tmp_path / "r")], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # The RUN step's container carries the labels of the image it runs on (the LABEL after FROM).
        for _ in range(120):
            if engine.client.containers.list(filters={"label": f"{ROLE_LABEL}={CHECK}"}):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the build's RUN step never started")
        proc.terminate()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, out + err
    assert "Traceback" not in err and "interrupted after 0 of 1 targets" in err
    # The daemon finishes the RUN step it had started (sleep 120 is killed with its build container).
    for _ in range(60):
        if _labelled(engine, out) == []:
            break
        time.sleep(1)
    assert _labelled(engine, out) == []


def test_preflight_built_sees_the_dropped_fix_in_the_built_image(series: Path, engine: DockerEngine) -> None:
    done = subprocess.run([sys.executable, "-m", "matrix", "preflight", "Dockerfile.v76", "--baseline",
                           "Dockerfile.v74", "--built", "--registry", str(REGISTRY)], cwd=series, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    built = done.stdout.split("The built images:", 1)[1]
    assert "| baseline-v74 | pass | numpy_scipy_incompatibility | — |" in built
    assert "| target-v76 | import-error | none | baseline-v74 |" in built
    assert ("- target-v76: fix not carried forward: numpy_scipy_incompatibility (numpy==1.24.3 scipy==1.10.1) was in "
            "baseline-v74") in built
    assert "RUN line 7 (`pip install numpy==2.2.6`) replaced numpy 1.26.4 → 2.2.6 under scipy 1.11.4" in built
    assert _labelled(engine, built) == []
