"""A workbench's agent: runs the host's commands in the workbench, one at a time, without an engine
exec for each (the docker backend's installs; matrix/backends/agent.py holds the other end).

An exec costs the engine ~45 ms of CPU (three API calls, a runc process joining the container);
this agent's answer costs under a millisecond. It is the workbench's main process, started by
the container's command after a check that the base's Python runs at all, and it reads requests
on its stdin, which the run's process holds. When that ends (the run is over, however it ended)
the agent kills the command under way and ends too: a workbench lives exactly as long as its run.

    request   one JSON line: {"id": ..., "argv": [...], "env": {name: value}}
    answer    "<id> <exit code> <stdout bytes> <stderr bytes>\\n", then those bytes
              ("<id> start <bytes>\\n" and the words, when the command could not be started)

The command runs as the agent does (the workbench's user), in its working directory, with the
container's environment and `env` on top (as `docker exec --env` would), stdin closed, in a
session of its own. Standard library only, Python 3.6+ (the base's own Python runs it).
"""

import json
import os
import select
import signal
import subprocess
import sys
import threading

DRAIN_S = 30


class Gone(Exception):
    """The requests' stream ended: the run that sent them is over."""


class NotStarted(Exception):
    """The command could not be started (no such program, say)."""


class Requests:
    """Lines from a file descriptor, read without read-ahead buffering that select() cannot see."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""
        self.wake_r, self.wake_w = os.pipe()  # a command's end, for select()

    def fill(self):
        chunk = os.read(self.fd, 65536)
        if not chunk:
            raise Gone()
        self.buf += chunk

    def line(self):
        while b"\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def watch(self, proc):
        """Wait for `proc`; if the stream ends meanwhile, kill its session and raise Gone. Data
        that comes meanwhile (the host sends no request before an answer) is kept for later."""
        def wait():
            proc.wait()
            os.write(self.wake_w, b".")

        waiter = threading.Thread(target=wait)
        waiter.start()
        try:
            while True:
                ready = select.select([self.fd, self.wake_r], [], [])[0]
                if self.wake_r in ready:
                    os.read(self.wake_r, 1)
                    return
                try:
                    self.fill()
                except Gone:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    raise
        finally:
            waiter.join()


def answer(out, head, *parts):
    out.write(head.encode("utf-8") + b"\n" + b"".join(parts))
    out.flush()


def reap():
    """Orphans of a command (a daemon it left) end up with this process, PID 1: reap them."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def run(requests, argv, env):
    """The command's exit code, stdout and stderr. Its output is read while it runs, to the end
    (or, when something it left behind holds its output open, for DRAIN_S after it ended)."""
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except (OSError, ValueError) as e:
        raise NotStarted("%s: %s" % (argv[0] if argv else "(no command)", e)) from None
    got = {"out": [], "err": []}

    def drain(name, pipe):
        with pipe:
            while True:
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    return
                got[name].append(chunk)

    readers = [threading.Thread(target=drain, args=(n, p), daemon=True)
               for n, p in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    requests.watch(proc)  # Gone: the agent ends, its readers with it
    for t in readers:
        t.join(DRAIN_S)
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode  # a signal, as a shell says it
    return code, b"".join(got["out"]), b"".join(got["err"])


def serve(requests, out):
    while True:
        line = requests.line()
        try:
            request = json.loads(line.decode("utf-8"))
            rid, argv = str(request["id"]), [str(a) for a in request["argv"]]
            env = dict(os.environ)
            env.update((str(k), str(v)) for k, v in request.get("env", {}).items())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            words = ("not a request: %s" % e).encode("utf-8", "replace")
            answer(out, "- start %d" % len(words), words)
            continue
        try:
            code, stdout, stderr = run(requests, argv, env)
        except NotStarted as e:
            words = str(e).encode("utf-8", "replace")
            answer(out, "%s start %d" % (rid, len(words)), words)
            continue
        finally:
            reap()
        answer(out, "%s %d %d %d" % (rid, code, len(stdout), len(stderr)), stdout, stderr)


if __name__ == "__main__":
    try:
        serve(Requests(0), sys.stdout.buffer)
    except Gone:
        pass
