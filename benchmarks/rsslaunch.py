"""`python benchmarks/rsslaunch.py OUT.json ARGS...`: `python -m matrix ARGS...` in this very process,
then the process's own resource use written to OUT.json.

The growth benchmark's memory target is the tool's, not the installers' and probes' it starts, nor
its launcher's: the high-water mark of this process's own memory (VmHWM in /proc/self/status),
which belongs to the address space exec made. getrusage(RUSAGE_SELF).ru_maxrss is not that: Linux
carries the old address space's mark across exec, and a process spawned by another (fork or vfork)
execs out of its parent's, so ru_maxrss starts at the launcher's RSS (the growth harness, at 460
MB, printed itself as the tool's peak). Written in a `finally`, so a run that exits with a status
other than 0 still reports.
"""

from __future__ import annotations

import json
import resource
import runpy
import sys


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec, in MB (VmHWM; ru_maxrss would inherit the spawner's)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # "VmHWM:   13548 kB"
    raise RuntimeError("/proc/self/status has no VmHWM line: peak RSS needs Linux's procfs")


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["matrix", *args]
    try:
        runpy.run_module("matrix", run_name="__main__", alter_sys=True)
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"peak_rss_mb": peak_rss_mb(), "utime_s": usage.ru_utime, "stime_s": usage.ru_stime}, f)


if __name__ == "__main__":
    main()
