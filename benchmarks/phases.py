"""Where a docker run's time goes: `python -m benchmarks.phases run --backend docker ARGS...`.

Runs `python -m matrix ARGS...` in this process with the docker backend's steps timed (each
cell, its prefix and workbench, its resolves, installs and probe run, and every call into the
engine), then prints each step as a line to stderr, by thread and start time, and the run's
three parts: from the start to the first install, the cells, and from the last cell to the
exit. Times count from when the backend's modules are loaded (the interpreter's start and those
imports, ~0.1 s, come before). It is a tool for reading one run, not a benchmark: its wrappers
cost a little time too.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from typing import Any

from matrix.backends import docker, engine, prober

T0 = time.perf_counter()
# (thread, step, start s, end s, what)
_spans: list[tuple[str, str, float, float, str]] = []
_lock = threading.Lock()

STEPS: list[tuple[type, str]] = [
    (docker.DockerBackend, name)
    for name in ("run_cell", "_prepare", "_start_bench", "_resolve", "_install", "_probe_run", "_tidy")]
STEPS += [(prober.Probers, "run"), (prober.Probers, "prestart")]
STEPS += [(engine.DockerEngine, name) for name in ("start", "exec", "put_files", "remove", "remove_labelled")]


def _what(step: str, args: tuple[Any, ...]) -> str:
    if step == "run_cell":
        return str(args[1].id)
    if step == "exec" and len(args) > 2:
        command = args[2]
        said = command[-1] if command[:2] == ["sh", "-c"] else " ".join(command)
        return " ".join(said.replace("/opt/compat-matrix/", "…/").split())[:70]
    return ""


def _timed(cls: type, name: str) -> None:
    step = getattr(cls, name, None)
    if step is None:
        raise SystemExit(f"benchmarks.phases: {cls.__name__}.{name} is gone; update STEPS in {__file__}")

    @functools.wraps(step)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter() - T0
        try:
            return step(*args, **kwargs)
        finally:
            with _lock:
                _spans.append((threading.current_thread().name.removeprefix("compat-matrix-"),
                               f"{cls.__name__}.{name}", start, time.perf_counter() - T0, _what(name, args)))

    setattr(cls, name, timed)


def report() -> None:
    end = time.perf_counter() - T0
    spans = sorted(_spans, key=lambda s: s[2])
    for thread, step, start, stop, what in spans:
        print(f"{thread:>12} {start:6.2f} {stop:6.2f} {stop - start:5.2f}  {step:<28} {what}", file=sys.stderr)
    installs = [s for s in spans if s[1].endswith("._install")]
    cells = [s for s in spans if s[1].endswith(".run_cell")]
    if installs and cells:
        first, last = installs[0][2], max(s[3] for s in cells)
        print(f"start → first install {first:.2f} s; to the last cell's end {last - first:.2f} s; "
              f"last cell → exit {end - last:.2f} s; in all {end:.2f} s", file=sys.stderr)


def main() -> int:
    for cls, name in STEPS:
        _timed(cls, name)
    from matrix import cli  # after the wrappers: nothing holds the steps unwrapped

    try:
        return cli.main(sys.argv[1:])
    finally:
        report()


if __name__ == "__main__":
    sys.exit(main())
