"""The two baselines of issue #7's benchmark: the same 12-cell matrix done without compat-matrix.

    python -m benchmarks.baselines naive    # one `docker build` + `docker run` per cell, serially
    python -m benchmarks.baselines peer     # benchmarks/peer/noxfile.py: nox + uv, -j 2

`naive` is what a team does by hand: a Dockerfile per cell (one `RUN pip install` per install
step, plain pip: bytecode compiled, no cache mount), built with the classic builder, the probes run
in a container, the image removed. `peer` is the best existing tool for the job: a static noxfile
with one parametrized session per cell on nox's uv backend, sessions in parallel, warm uv cache.

Both report the same outcomes as the tool: a failed install is classified from the installer's
output (matrix.classify.classify_install), a finished one from the probe driver's report
(matrix.probing.parse + judge). Cells are dicts {"numpy": X, "scipy": Y, "mode": M} (optionally
"base", default "py311"); CELLS is the benchmark's 12.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix.classify import classify_install
from matrix.probing import RunResult, driver_timeout, judge, parse, probes_dir

ROOT = Path(__file__).resolve().parent.parent
PEER_NOXFILE = Path(__file__).resolve().parent / "peer" / "noxfile.py"
IMAGE = "compat-matrix-test/bookworm-py311:local"
LABEL = "org.compat-matrix.run"
NAIVE_RUN = "bench-naive"
PROBE_TIMEOUT_S = 300
ONLY_BINARY = "--only-binary=:all:"
NUMPY = ["1.26.4", "2.0.2", "2.2.6"]
SCIPY = ["1.11.4", "1.13.1"]
MODES = ["together", "layered"]
CELLS: list[dict[str, str]] = [
    {"numpy": n, "scipy": s, "mode": m} for n, s, m in itertools.product(NUMPY, SCIPY, MODES)
]


@dataclass
class Result:
    seconds: float
    outcomes: dict[str, str]
    per_cell: dict[str, float] = field(default_factory=dict)


def cell_id(cell: dict[str, str]) -> str:
    """As matrix.cells.Cell.id gives it: base, the pins in matrix order, the mode."""
    return f"{cell.get('base', 'py311')}-numpy{cell['numpy']}-scipy{cell['scipy']}-{cell['mode']}"


def pins(cell: dict[str, str]) -> dict[str, str]:
    return {"numpy": cell["numpy"], "scipy": cell["scipy"]}


def install_steps(cell: dict[str, str]) -> list[list[str]]:
    """Arguments after `pip install`, as matrix.install.steps gives them (layered order: scipy, numpy)."""
    if cell["mode"] == "together":
        return [[ONLY_BINARY, f"numpy=={cell['numpy']}", f"scipy=={cell['scipy']}"]]
    if cell["mode"] == "layered":
        return [[ONLY_BINARY, f"scipy=={cell['scipy']}"], [ONLY_BINARY, "--no-deps", f"numpy=={cell['numpy']}"]]
    raise ValueError(f"unknown mode {cell['mode']!r}")


def driver_env(cell: dict[str, str], nonce: str) -> dict[str, str]:
    return {
        "COMPAT_MATRIX_PINS": json.dumps(pins(cell)),
        "COMPAT_MATRIX_NONCE": nonce,
        "COMPAT_MATRIX_ISSUE_PROBES": "[]",
        "COMPAT_MATRIX_PROBE_TIMEOUT": str(PROBE_TIMEOUT_S),
    }


def outcome(install_ok: bool, install_output: str, ran: RunResult | None, nonce: str) -> str:
    if not install_ok or ran is None:
        return classify_install(install_output).outcome.value
    return judge(ran, parse(ran.stdout, nonce), "none").outcome.value


_VIRTUAL = ("lo", "docker", "veth", "br-")


def busy_cpu_s() -> float:
    """CPU-seconds the machine's cores have been busy so far, all processes and the kernel
    (/proc/stat: user, nice, system, irq, softirq; not idle, iowait, nor the hypervisor's steal)."""
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def rx_bytes() -> int:
    """Bytes received so far on the host's non-loopback interfaces (/proc/net/dev). Docker's bridge
    and veth interfaces are left out: what a bridged container receives arrives on the uplink too."""
    total = 0
    with open("/proc/net/dev", encoding="ascii") as f:
        for line in f.readlines()[2:]:
            name, _, counters = line.partition(":")
            if name.strip().startswith(_VIRTUAL):
                continue
            total += int(counters.split()[0])
    return total


# --- naive: docker build + docker run per cell ---------------------------------------------------

def dockerfile(image: str, cell: dict[str, str]) -> str:
    lines = [
        f"FROM {image}",
        f"LABEL {LABEL}={NAIVE_RUN}",
        "RUN python3 -m venv /opt/venv",
        # The machine's package traffic passes a TLS proxy: pip must trust its CA.
        "COPY ca.pem /usr/local/share/ca-certificates/proxy-ca.pem",
        "ENV PIP_CERT=/usr/local/share/ca-certificates/proxy-ca.pem"
        " SSL_CERT_FILE=/usr/local/share/ca-certificates/proxy-ca.pem",
    ]
    lines += [f"RUN /opt/venv/bin/pip install {' '.join(args)}" for args in install_steps(cell)]
    lines.append("COPY probes /probes")
    return "\n".join(lines) + "\n"


def _remove_labelled(client: Any) -> None:
    """Every container and image labelled by the naive run; images leaf-first (a parent with
    children cannot be removed), repeated until nothing more goes."""
    import docker.errors

    flt = {"label": f"{LABEL}={NAIVE_RUN}"}
    for c in client.containers.list(all=True, filters=flt):
        try:
            c.remove(force=True)
        except docker.errors.APIError:
            pass
    for _ in range(50):
        images = client.api.images(all=True, filters=flt, quiet=True)
        if not images:
            return
        gone = 0
        for image_id in images:
            try:
                client.api.remove_image(image_id, force=True)
                gone += 1
            except docker.errors.NotFound:
                gone += 1
            except docker.errors.APIError:
                pass  # still has a child: goes in a later round
        if not gone:
            return


def _naive_cell(client: Any, image: str, cell: dict[str, str], context: Path, nonce: str) -> str:
    import docker.errors
    import requests.exceptions

    (context / "Dockerfile").write_text(dockerfile(image, cell), encoding="utf-8")
    tag = f"compat-matrix-bench/naive:{cell_id(cell).replace('.', '_')}"
    log: list[str] = []
    failed = False
    for chunk in client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="host",
                                  decode=True, labels={LABEL: NAIVE_RUN}):
        if "stream" in chunk:
            log.append(chunk["stream"])
        if "error" in chunk:
            failed = True
            log.append(chunk["error"] + "\n")
    if failed:
        return outcome(False, "".join(log), None, nonce)

    container = client.containers.run(
        tag, ["/opt/venv/bin/python", "/probes/_driver.py"], environment=driver_env(cell, nonce),
        network_mode="none", labels={LABEL: NAIVE_RUN}, detach=True)
    timed_out = False
    try:
        try:
            code = container.wait(timeout=driver_timeout(PROBE_TIMEOUT_S))["StatusCode"]
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):  # the read timed out
            timed_out = True
            container.kill()
            code = container.wait()["StatusCode"]
        container.reload()
        ran = RunResult(
            exit_code=code,
            stdout=container.logs(stdout=True, stderr=False).decode("utf-8", "replace"),
            stderr=container.logs(stdout=False, stderr=True).decode("utf-8", "replace"),
            timed_out=timed_out,
            oom_killed=bool(container.attrs["State"].get("OOMKilled")),
        )
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
    return outcome(True, "".join(log), ran, nonce)


def naive(image: str, cells: list[dict[str, str]], workdir: Path) -> Result:
    """Serially per cell: render a Dockerfile, `docker build` (classic builder), run the probes in
    a container without network, remove the image. Every cell starts from the bare base image:
    what a build left behind (its image, or a failed build's intermediate layers) goes with it."""
    import docker

    from matrix.probing import new_nonce

    client = docker.from_env()
    context = Path(workdir) / "naive-context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    cert = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    shutil.copyfile(cert, context / "ca.pem")
    shutil.copytree(probes_dir(), context / "probes", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    outcomes: dict[str, str] = {}
    per_cell: dict[str, float] = {}
    start = time.perf_counter()
    try:
        for cell in cells:
            t0 = time.perf_counter()
            outcomes[cell_id(cell)] = _naive_cell(client, image, cell, context, new_nonce())
            _remove_labelled(client)
            per_cell[cell_id(cell)] = time.perf_counter() - t0
    finally:
        _remove_labelled(client)
    return Result(time.perf_counter() - start, outcomes, per_cell)


# --- peer: nox + uv ----------------------------------------------------------------------------

def python311() -> str:
    """A host python3.11 (pyenv's, else the one on PATH)."""
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False).stdout.strip() \
        if shutil.which("pyenv") else ""
    found = sorted(glob.glob(os.path.join(root, "versions", "3.11.*", "bin", "python3.11"))) if root else []
    if found:
        return found[-1]
    on_path = shutil.which("python3.11")
    if on_path is None:
        raise RuntimeError("no python3.11 found (pyenv versions or PATH)")
    return on_path


def _session_name(cell: dict[str, str]) -> str:
    return f"cell(numpy='{cell['numpy']}', scipy='{cell['scipy']}', mode='{cell['mode']}')"


def _run_nox(python: str, cells: list[dict[str, str]], workdir: Path, jobs: int, tag: str) -> tuple[float, Path]:
    """One nox invocation over `cells` with fresh venvs; (seconds, directory of its results)."""
    base = {cell.get("base", "py311") for cell in cells}
    if len(base) != 1:
        raise ValueError(f"the peer runs one base at a time, got {sorted(base)}")
    envdir, out, report = workdir / f"nox-{tag}", workdir / f"peer-{tag}", workdir / f"peer-{tag}.json"
    for path in (envdir, out):
        shutil.rmtree(path, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ, BENCH_PEER_OUT=str(out), BENCH_PEER_PYTHON=python, BENCH_PEER_BASE=base.pop())
    env.pop("NOXSESSION", None)
    cmd = [sys.executable, "-m", "nox", "-f", str(PEER_NOXFILE), "-j", str(jobs), "--no-stop-on-first-error",
           "--download-python", "never", "--envdir", str(envdir), "--report", str(report),
           "-s", *[_session_name(c) for c in cells]]
    with open(workdir / f"nox-{tag}.log", "w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
        seconds = time.perf_counter() - t0
    return seconds, out


def peer(python: str, cells: list[dict[str, str]], workdir: Path, jobs: int = 2, warmup: bool = True) -> Result:
    """`nox -f benchmarks/peer/noxfile.py -j <jobs>` over the cells, timed as a whole; venvs made afresh
    (its envdir is cleaned first), the uv cache warmed by an untimed first run when `warmup`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if warmup:
        _run_nox(python, cells, workdir, jobs, "warmup")
        shutil.rmtree(workdir / "nox-warmup", ignore_errors=True)
    seconds, out = _run_nox(python, cells, workdir, jobs, "timed")

    per_cell: dict[str, float] = {}
    report = workdir / "peer-timed.json"
    if report.is_file():
        for session in json.loads(report.read_text(encoding="utf-8")).get("sessions", []):
            args = session.get("args") or {}
            if {"numpy", "scipy", "mode"} <= args.keys():
                key = cell_id({**cells[0], "numpy": args["numpy"], "scipy": args["scipy"], "mode": args["mode"]})
                per_cell[key] = float(session.get("duration", 0.0))
    outcomes: dict[str, str] = {}
    for cell in cells:
        path = out / f"{cell_id(cell)}.json"
        if not path.is_file():
            outcomes[cell_id(cell)] = "infra-error"  # the session died before writing its result
            continue
        raw = json.loads(path.read_text(encoding="utf-8"))
        ran = None
        if raw["install_ok"]:
            ran = RunResult(exit_code=raw["exit_code"], stdout=raw["stdout"], stderr=raw["stderr"])
        outcomes[cell_id(cell)] = outcome(raw["install_ok"], raw["install_output"], ran, raw.get("nonce", ""))
    return Result(seconds, outcomes, per_cell)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=["naive", "peer"])
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--image", default=IMAGE, help="base image of the naive builds")
    parser.add_argument("--python", default=None, help="interpreter of the peer's venvs (default: pyenv's 3.11)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="the peer's parallel sessions")
    parser.add_argument("--no-warmup", action="store_true", help="the peer: skip the untimed first run")
    args = parser.parse_args(argv)

    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.which == "naive":
            rx0 = rx_bytes()
            result = naive(args.image, CELLS, workdir)
        else:
            python = args.python or python311()
            if not args.no_warmup:
                _run_nox(python, CELLS, workdir, args.jobs, "warmup")
                shutil.rmtree(workdir / "nox-warmup", ignore_errors=True)
            rx0 = rx_bytes()
            result = peer(python, CELLS, workdir, jobs=args.jobs, warmup=False)
        received = rx_bytes() - rx0
    print(f"{args.which}: {result.seconds:.1f} s for {len(CELLS)} cells, {received / 1e6:.1f} MB received")
    for cell in CELLS:
        key = cell_id(cell)
        took = result.per_cell.get(key)
        print(f"  {key:<42} {result.outcomes.get(key, '?'):<17} {'' if took is None else f'{took:6.1f} s'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
