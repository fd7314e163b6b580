"""The peer baseline of issue #7: the 12-cell matrix the way a careful team would run it without us.

One nox session per cell (nox's uv backend: `uv venv` + `uv pip install`), parametrized over numpy,
scipy and the install mode, running our probe driver after the installs. Each session writes its raw
result to $BENCH_PEER_OUT/<cell id>.json for the bench to classify afterwards:

    BENCH_PEER_OUT=/tmp/peer nox -f benchmarks/peer/noxfile.py -j 2 --no-stop-on-first-error

`together` is one install of both pins; `layered` is scipy first, then numpy forced over it with
--no-deps (one `RUN pip install` per package in a Dockerfile). A cell whose install fails fails its
session, as it would in CI; the others go on.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import nox
from nox.command import CommandFailed

DRIVER = Path(__file__).resolve().parents[2] / "probes" / "_driver.py"
# A version ("3.11") or an interpreter's path; the base name goes into the cell ids.
PYTHON = os.environ.get("BENCH_PEER_PYTHON", "3.11")
BASE = os.environ.get("BENCH_PEER_BASE", "py311")
ONLY_BINARY = "--only-binary=:all:"

nox.options.sessions = ["cell"]
nox.options.stop_on_first_error = False


@nox.session(python=PYTHON, venv_backend="uv", allow_parallel=True)
@nox.parametrize("mode", ["together", "layered"])
@nox.parametrize("scipy", ["1.11.4", "1.13.1"])
@nox.parametrize("numpy", ["1.26.4", "2.0.2", "2.2.6"])
def cell(session: nox.Session, numpy: str, scipy: str, mode: str) -> None:
    out_dir = os.environ.get("BENCH_PEER_OUT")
    if not out_dir:
        session.error("set BENCH_PEER_OUT to the directory that receives each cell's result")
    cell_id = f"{BASE}-numpy{numpy}-scipy{scipy}-{mode}"
    work = Path(out_dir, cell_id)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"cell": cell_id, "numpy": numpy, "scipy": scipy, "mode": mode}

    if mode == "together":
        steps = [[ONLY_BINARY, f"numpy=={numpy}", f"scipy=={scipy}"]]
    else:
        steps = [[ONLY_BINARY, f"scipy=={scipy}"], [ONLY_BINARY, "--no-deps", f"numpy=={numpy}"]]
    install_log = work / "install.log"
    failed = None
    with open(install_log, "w", encoding="utf-8") as log:
        for args in steps:
            try:
                session.install(*args, silent=False, stdout=log)
            except CommandFailed as e:
                failed = e
                break
            finally:
                log.flush()
    result["install_ok"] = failed is None
    result["install_output"] = install_log.read_text(encoding="utf-8")

    if failed is None:
        nonce = secrets.token_hex(16)
        env = {
            "COMPAT_MATRIX_PINS": json.dumps({"numpy": numpy, "scipy": scipy}),
            "COMPAT_MATRIX_NONCE": nonce,
            "COMPAT_MATRIX_ISSUE_PROBES": "[]",
            "COMPAT_MATRIX_PROBE_TIMEOUT": "300",
        }
        code = 0
        with open(work / "driver.stdout", "w", encoding="utf-8") as out, \
                open(work / "driver.stderr", "w", encoding="utf-8") as err:
            try:
                session.run("python", str(DRIVER), env=env, silent=False, stdout=out, stderr=err)
            except CommandFailed as e:
                code = e.return_code if e.return_code is not None else -1
        result.update(nonce=nonce, exit_code=code,
                      stdout=(work / "driver.stdout").read_text(encoding="utf-8"),
                      stderr=(work / "driver.stderr").read_text(encoding="utf-8"))

    Path(out_dir, f"{cell_id}.json").write_text(json.dumps(result), encoding="utf-8")
    if failed is not None:
        raise failed
