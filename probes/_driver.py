"""Runs every probe of this directory in its own subprocess and reports one JSON line each.

Runs inside the cell's environment with nothing but the standard library (Python 3.6+). A probe
that segfaults, hangs or floods its output takes down only itself. Probes write their verdict to a
result file, not to stdout, so whatever a package prints on import cannot pass for a result; the
lines this driver prints start with a nonce the host chose and the probes never see.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

NONCE_VAR = "COMPAT_MATRIX_NONCE"
TAIL = 4000
MAX_RESULT = 1 << 20


def tail(path):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - TAIL))
        return f.read().decode("utf-8", "replace")


def installed(pins):
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        return {}
    out = {}
    for name in pins:
        try:
            out[name] = metadata.version(name)
        except Exception:  # noqa: BLE001 - absent or broken metadata both mean "not installed"
            out[name] = None
    return out


def run_probe(path, timeout, env):
    work = tempfile.mkdtemp(prefix="cm-probe-")
    try:
        result_path = os.path.join(work, "result.json")
        out_path = os.path.join(work, "stdout")
        err_path = os.path.join(work, "stderr")
        child_env = dict(env, COMPAT_MATRIX_RESULT=result_path)
        started = time.monotonic()
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, path], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=child_env, cwd=work, start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
        record = {
            "probe": os.path.splitext(os.path.basename(path))[0],
            "returncode": proc.returncode,
            "signal": -proc.returncode if proc.returncode < 0 else None,
            "timed_out": timed_out,
            "duration_s": round(time.monotonic() - started, 3),
            "stdout_tail": tail(out_path),
            "stderr_tail": tail(err_path),
            "result": None,
        }
        if os.path.exists(result_path) and os.path.getsize(result_path) <= MAX_RESULT:
            try:
                with open(result_path, encoding="utf-8") as f:
                    record["result"] = json.load(f)
            except ValueError:
                record["result"] = None
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    nonce = os.environ.pop(NONCE_VAR, "")
    env = dict(os.environ)
    timeout = float(env.get("COMPAT_MATRIX_PROBE_TIMEOUT", "300"))
    pins = json.loads(env.get("COMPAT_MATRIX_PINS", "{}"))
    here = os.path.dirname(os.path.abspath(__file__))
    only = [p for p in env.get("COMPAT_MATRIX_PROBES", "").split(",") if p]
    names = sorted(
        n for n in os.listdir(here)
        if n.endswith(".py") and not n.startswith("_") and (not only or n[:-3] in only)
    )

    def emit(obj):
        sys.stdout.write(nonce + " " + json.dumps(obj, sort_keys=True) + "\n")
        sys.stdout.flush()

    emit({"kind": "env", "python": "%d.%d.%d" % sys.version_info[:3], "installed": installed(pins)})
    for name in names:
        record = run_probe(os.path.join(here, name), timeout, env)
        record["kind"] = "probe"
        emit(record)
    emit({"kind": "done"})


if __name__ == "__main__":
    main()
