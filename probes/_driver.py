"""Runs every probe of this directory and reports one JSON line each.

Runs inside the cell's environment with nothing but the standard library (Python 3.6+). The probes
first run one after another in one interpreter (the heavy imports happen once); from the first
probe that does not pass, each runs in a subprocess of its own, as if the group had never been.
A probe that segfaults, hangs or floods its output takes down only itself. Probes write their verdict to a
result file, not to stdout, so whatever a package prints on import cannot pass for a result; the
lines this driver prints start with a nonce the host chose and the probes never see: the driver makes
itself undumpable first, so code of the same user cannot read its environment (/proc/PID/environ)
nor write to its output (/proc/PID/fd/1). Processes a probe leaves behind are killed when it ends,
also those that left its process group (the driver is their subreaper), and its record counts them.
"""

import os
import sys

# Bytecode kept per distribution (_bytecode.py): where, and whether the probes may add to it.
OVERLAY_VAR = "COMPAT_MATRIX_PYC_OVERLAY"
WRITABLE_VAR = "COMPAT_MATRIX_PYC_WRITABLE"


def share_bytecode(env):
    """Link the bytecode prefix to the kept bytecode before anything else is imported: with a
    fresh prefix, this driver's own imports (json, subprocess, importlib.metadata) were compiled
    from source every time (0.13 s a cell)."""
    if env.get(OVERLAY_VAR) and env.get("PYTHONPYCACHEPREFIX"):
        try:
            import _bytecode
            _bytecode.link(env["PYTHONPYCACHEPREFIX"], env[OVERLAY_VAR], env.get(WRITABLE_VAR) == "1")
        except Exception:  # noqa: BLE001 - shared bytecode only saves time: without it, each compiles
            pass


if __name__ == "__main__":
    share_bytecode(os.environ)

import json  # noqa: E402 - after share_bytecode
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

NONCE_VAR = "COMPAT_MATRIX_NONCE"
# "1": this driver runs in a prober, and cleans it up after its probes (clean_up()).
PROBER_VAR = "COMPAT_MATRIX_PROBER"
ALSO_VAR = "COMPAT_MATRIX_PROBE_ALSO"
# prctl(2) options.
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
TAIL = 4000
MAX_RESULT = 1 << 20
GROUP_FLAG = "--group"
# "0": every probe in a process of its own from the start (the group is an optimisation only).
GROUP_VAR = "COMPAT_MATRIX_PROBE_GROUP"


# The container's count of OOM kills (cgroup v2, v1). Read when the driver starts and when its probes
# are through: in a container of its own, or a prober cleaned before it (matrix/backends/prober.py),
# a kill in between met the memory limit in this cell.
OOM_COUNTS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


def oom_kills():
    for path in OOM_COUNTS:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


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


def read_result(result_path):
    if os.path.exists(result_path) and os.path.getsize(result_path) <= MAX_RESULT:
        try:
            with open(result_path, encoding="utf-8") as f:
                return json.load(f)
        except ValueError:
            return None
    return None


def probe_record(path, returncode, timed_out, duration_s, out_path, err_path, result_path):
    return {
        "probe": os.path.splitext(os.path.basename(path))[0],
        "returncode": returncode,
        "signal": -returncode if returncode < 0 else None,
        "timed_out": timed_out,
        "duration_s": round(duration_s, 3),
        "stdout_tail": tail(out_path),
        "stderr_tail": tail(err_path),
        "result": read_result(result_path),
    }


def protect():
    """Make this process undumpable (its /proc entries become root's: another process of the same
    user can read neither its environment nor its file descriptors) and the subreaper of what its
    probes leave behind. Linux only; elsewhere, or without ctypes, nothing changes."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # noqa: BLE001 - no prctl here: the host still requires the driver's orderly end
        pass


def _processes():
    """(pid, parent pid, process group) of every process this one can see."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "(comm)": state ppid pgrp ...
        if len(fields) >= 3:
            out.append((int(name), int(fields[1]), int(fields[2])))
    return out


def kill_strays(group):
    """Kill what is left of a probe: its process group, and whatever was orphaned to this driver
    (a daemon that left the group); returns how many processes that was."""
    me = os.getpid()
    return len(kill_all(lambda ppid, pgrp: pgrp == group or ppid == me, 50)[0])


def kill_all(match, rounds):
    """Kill every live process but this one that `match(ppid, pgrp)` picks, round after round (a
    process may fork while it is being killed) until a round kills none (one not ours to kill,
    root's, is left alone), at most `rounds` of them; this driver's zombies are reaped, not
    counted. The pids killed, and whether a round killed none."""
    me = os.getpid()
    killed = set()
    for _ in range(rounds):
        reap()
        hit = False
        for pid, ppid, pgrp in _processes():
            if pid != me and match(ppid, pgrp) and _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                    hit = True
                except OSError:
                    pass  # not ours to kill, or gone
        if not hit:
            reap()
            return killed, True
        time.sleep(0.01)
    reap()
    return killed, False


def reap():
    """Reap this driver's children that have ended."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _alive(pid):
    """Running (not a zombie waiting to be reaped)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X", "")


def clean_up():
    """In a prober (matrix/backends/prober.py), what its clean-up would do after this run, done
    here so the host need not exec it: kill every process this user may (the container's init and
    idle command are root's) until none is left but zombies, and empty /tmp and /dev/shm, the only
    places a cell can write. Whether that left the prober clean."""
    if not kill_all(lambda ppid, pgrp: True, 100)[1]:
        return False
    clean = True
    for top in ("/tmp", "/dev/shm"):
        try:
            names = os.listdir(top)
        except OSError:
            continue
        for name in names:
            path = os.path.join(top, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.chmod(path, 0o700)  # a directory the cell made unreadable is opened first
                    for folder, dirs, _files in os.walk(path):
                        for d in dirs:
                            if not os.path.islink(os.path.join(folder, d)):
                                os.chmod(os.path.join(folder, d), 0o700)
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except OSError:
                clean = False
    return clean


def kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def run_probe(path, timeout, env):
    """One probe in a process of its own."""
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
                kill(proc)
            strays = kill_strays(proc.pid)
        record = probe_record(path, proc.returncode, timed_out, time.monotonic() - started, out_path, err_path,
                              result_path)
        record["strays"] = strays
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def group_child(work, paths):
    """In this one interpreter, each probe in turn as __main__, its stdout and stderr into files of
    its own; stops after the first probe that did not pass (it leaves the interpreter in a state a
    fresh process would not see). Markers tell the driver where it is."""
    import runpy
    import traceback

    for i, path in enumerate(paths):
        base = os.path.join(work, str(i))
        open(base + ".started", "w").close()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, suffix in ((1, ".stdout"), (2, ".stderr")):
            target = os.open(base + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        os.environ["COMPAT_MATRIX_RESULT"] = base + ".result"
        sys.argv = [path]
        started = time.monotonic()
        code = 0
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as e:
            if e.code is not None and not isinstance(e.code, int):
                sys.stderr.write("%s\n" % (e.code,))
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - what an uncaught exception does to a process of its own
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        with open(base + ".done.tmp", "w") as f:  # renamed whole: the driver never reads half of it
            f.write("%d %f" % (code, time.monotonic() - started))
        os.rename(base + ".done.tmp", base + ".done")
        verdict = read_result(base + ".result") or {}
        if code != 0 or verdict.get("status") not in ("pass", "skip"):
            break
    os._exit(0)  # a probe's leftover threads do not hold the group up


def run_group(paths, timeout, env):
    """The probes in one interpreter (each imports numpy and scipy once instead of once a probe),
    as far as they pass: {index: record} for the probes it ran. One that crashed or outran its
    limit gets the record a process of its own would have given it; the driver runs the rest (from
    the first that failed) each in a process of its own, as always."""
    work = tempfile.mkdtemp(prefix="cm-group-")
    records = {}
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), GROUP_FLAG, work] + paths, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=work, start_new_session=True,
        )
        i, noticed = 0, None
        while i < len(paths):
            base = os.path.join(work, str(i))
            files = (base + ".stdout", base + ".stderr", base + ".result")
            if os.path.exists(base + ".done"):
                with open(base + ".done") as f:
                    code, took = f.read().split()
                records[i] = probe_record(paths[i], int(code), False, float(took), *files)
                i, noticed = i + 1, None
                continue
            if noticed is None and os.path.exists(base + ".started"):
                noticed = time.monotonic()
            if proc.poll() is not None:
                if not os.path.exists(base + ".done"):
                    if os.path.exists(base + ".started") and proc.returncode != 0:  # it took the interpreter down
                        took = time.monotonic() - noticed if noticed is not None else 0.0
                        records[i] = probe_record(paths[i], proc.returncode, False, took, *files)
                    break
                continue
            if noticed is not None and time.monotonic() - noticed > timeout:
                kill(proc)
                records[i] = probe_record(paths[i], proc.returncode, True, time.monotonic() - noticed, *files)
                break
            time.sleep(0.01)
        proc.wait()
        strays = kill_strays(proc.pid)
        if records:  # what the group left behind, on the record of the probe it ran last
            records[max(records)]["strays"] = strays
        return records
    finally:
        if proc is not None and proc.poll() is None:
            kill(proc)
        shutil.rmtree(work, ignore_errors=True)


def main():
    protect()
    oom_before = oom_kills()
    nonce = os.environ.pop(NONCE_VAR, "")
    env = dict(os.environ)
    timeout = float(env.get("COMPAT_MATRIX_PROBE_TIMEOUT", "300"))
    pins = json.loads(env.get("COMPAT_MATRIX_PINS", "{}"))
    # Packages the environment already had (a team's image): probed as pins are, at the version found.
    also = [n for n in env.get(ALSO_VAR, "").split(",") if n and n not in pins]
    if also:
        pins.update((n, v) for n, v in installed(also).items() if v)
        env["COMPAT_MATRIX_PINS"] = json.dumps(pins)
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
    paths = [os.path.join(here, name) for name in names]
    grouped = {}
    if len(paths) > 1 and env.get(GROUP_VAR, "1") != "0":
        try:
            grouped = run_group(paths, timeout, env)
        except Exception:  # noqa: BLE001 - the group only saves time: without it, each probe alone
            grouped = {}
    for i, path in enumerate(paths):
        record = grouped.get(i) or run_probe(path, timeout, env)
        record["kind"] = "probe"
        emit(record)
    oom_after = oom_kills()
    done = {"kind": "done"}
    if oom_before is not None and oom_after is not None:
        done["oom_kills"] = oom_after - oom_before
    if env.get(PROBER_VAR) == "1":
        cleaned = clean_up()
        total = oom_kills()  # after it: what the next run in the prober starts from
        done["cleaned"] = cleaned and total is not None
        done["oom_total"] = total
    emit(done)


if __name__ == "__main__":
    if sys.argv[1:2] == [GROUP_FLAG]:
        group_child(sys.argv[2], sys.argv[3:])
    else:
        main()
