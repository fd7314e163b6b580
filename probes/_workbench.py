"""A workbench's agent: runs the host's commands in the workbench, side by side, without an engine
exec for each (the docker backend's installs; matrix/backends/agent.py holds the other end).

An exec costs the engine ~45 ms of CPU (three API calls, a runc process joining the container);
this agent's answer costs under a millisecond. It is the workbench's main process, started by
the container's command after a check that the base's Python runs at all, and it reads requests
on its stdin, which the run's process holds. When that ends (the run is over, however it ended)
the agent kills the commands under way and ends too: a workbench lives exactly as long as its run.

    request   one JSON line: {"id": ..., "argv": [...], "env": {name: value}}
    answer    "<id> <exit code> <stdout bytes> <stderr bytes>\\n", then those bytes
              ("<id> start <bytes>\\n" and the words, when the command could not be started)

Each request's command starts at once, while earlier ones run (the workers of a run share one
workbench per base); each answer is written whole when its command is through, in the order they
finish. A command runs as the agent does (the workbench's user), in its working directory, with
the container's environment and `env` on top (as `docker exec --env` would), stdin closed, in a
session of its own. Standard library only, Python 3.6+ (the base's own Python runs it).
"""

import json
import os
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
    """Lines from a file descriptor."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise Gone()
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


class Agent:
    """The commands under way, and the one writer of answers."""

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()  # the answers' stream, the commands under way, reaping
        self.running = {}  # pid → its Popen, from its start until it has been waited for

    def answer(self, head, *parts):
        """Write an answer whole: answers of commands that end together never interleave."""
        with self.lock:
            self.out.write(head.encode("utf-8") + b"\n" + b"".join(parts))
            self.out.flush()

    def start(self, rid, argv, env):
        """Run the request's command on a thread of its own; its answer comes when it is through."""
        threading.Thread(target=self._serve, args=(rid, argv, env), daemon=True).start()

    def _serve(self, rid, argv, env):
        try:
            code, stdout, stderr = self._run(argv, env)
        except NotStarted as e:
            words = str(e).encode("utf-8", "replace")
            self.answer("%s start %d" % (rid, len(words)), words)
            return
        self.answer("%s %d %d %d" % (rid, code, len(stdout), len(stderr)), stdout, stderr)

    def _run(self, argv, env):
        """The command's exit code, stdout and stderr. Its output is read while it runs, to the end
        (or, when something it left behind holds its output open, for DRAIN_S after it ended)."""
        with self.lock:  # started and known as ours before _reap() can look at its children
            try:
                proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True)
            except (OSError, ValueError) as e:
                raise NotStarted("%s: %s" % (argv[0] if argv else "(no command)", e)) from None
            self.running[proc.pid] = proc
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
        proc.wait()
        with self.lock:
            if self.running.get(proc.pid) is proc:  # (its pid, free once waited for, may be a new command's)
                del self.running[proc.pid]
            self._reap()
        for t in readers:
            t.join(DRAIN_S)
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode  # a signal, as a shell says it
        return code, b"".join(got["out"]), b"".join(got["err"])

    def _reap(self):
        """Orphans of a command (a daemon it left) end up with this process, PID 1: reap the ones
        that are dead, never a command under way (its thread waits for it and needs its status)."""
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.running:
                continue
            try:
                with open("/proc/%s/stat" % entry, "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if len(fields) > 1 and fields[0] == b"Z" and fields[1] == str(me).encode():
                try:
                    os.waitpid(int(entry), os.WNOHANG)
                except ChildProcessError:
                    pass

    def stop(self):
        """The run is over: kill every command under way (and its session)."""
        with self.lock:
            for pid in list(self.running):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass


def serve(requests, agent):
    try:
        while True:
            line = requests.line()
            try:
                request = json.loads(line.decode("utf-8"))
                rid, argv = str(request["id"]), [str(a) for a in request["argv"]]
                env = dict(os.environ)
                env.update((str(k), str(v)) for k, v in request.get("env", {}).items())
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                words = ("not a request: %s" % e).encode("utf-8", "replace")
                agent.answer("- start %d" % len(words), words)
                continue
            agent.start(rid, argv, env)
    except Gone:
        agent.stop()


if __name__ == "__main__":
    serve(Requests(0), Agent(sys.stdout.buffer))
