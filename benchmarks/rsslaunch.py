"""`python benchmarks/rsslaunch.py OUT.json ARGS...`: `python -m matrix ARGS...` in this very process,
then the process's own resource use written to OUT.json.

The growth benchmark's memory target is the tool's, not the installers' and probes' it starts:
getrusage(RUSAGE_SELF) of the process that ran the command line is exactly that (RUSAGE_CHILDREN
would be the uv and probe processes). Written in a `finally`, so a run that exits with a status
other than 0 still reports.
"""

from __future__ import annotations

import json
import resource
import runpy
import sys


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["matrix", *args]
    try:
        runpy.run_module("matrix", run_name="__main__", alter_sys=True)
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"maxrss_kb": usage.ru_maxrss, "utime_s": usage.ru_utime, "stime_s": usage.ru_stime}, f)


if __name__ == "__main__":
    main()
