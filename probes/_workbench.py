"""A workbench's agent: runs the host's commands in the workbench, one at a time, without an engine
exec for each (the docker backend's installs; matrix/backends/engine.py holds the other end).

An exec costs the engine ~45 ms of CPU (three API calls, a runc process joining the container);
this agent's answer costs under a millisecond. It is the workbench's main process, started by
the container's command after a check that the base's Python runs at all, and it reads requests
on its stdin, which the run's process holds: it ends when the run does, however the run ends.

    request   one JSON line: {"id": ..., "argv": [...], "env": {name: value}}
    answer    "<id> <exit code> <stdout bytes> <stderr bytes>\\n", then those bytes
              ("<id> start <bytes>\\n" and the words, when the command could not be started)

The command runs as the agent does (the workbench's user), in its working directory, with the
container's environment and `env` on top (as `docker exec --env` would), stdin closed. Standard
library only, Python 3.6+ (the base's own Python runs it).
"""

import json
import os
import subprocess
import sys


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


def serve(requests, out):
    for line in requests:
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
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        except (OSError, ValueError) as e:
            words = ("%s: %s" % (argv[0] if argv else "(no command)", e)).encode("utf-8", "replace")
            answer(out, "%s start %d" % (rid, len(words)), words)
            continue
        finally:
            reap()
        code = done.returncode if done.returncode >= 0 else 128 - done.returncode  # a signal, as a shell says it
        answer(out, "%s %d %d %d" % (rid, code, len(done.stdout), len(done.stderr)), done.stdout, done.stderr)


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
