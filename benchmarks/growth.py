"""Issue #18's growth targets: does a sweep cost more per cell, or hold more memory, as it grows?

    python -m benchmarks.growth [--results DIR] [--expect RECORDS.jsonl] [--select PATTERN ...]
    nox -s bench -- --large          # the same, after the 12-cell benchmark (CI runs neither)

In one invocation, on the venv backend (no engine), default workers:

1. the 12-cell matrix (benchmarks/matrix-12.yaml) with `--rerun`: twice from empty caches (uv's and
   the tool's: verdicts, bytecode, index answers), as the 800 cells run, then twice more with those
   caches warm, as bench.py times it; the better of each two counts: its time per probed cell;
2. the 800-cell matrix (benchmarks/matrix-800.yaml: python 3.10–3.13 × 10 numpy × 10 scipy × both
   modes; most cells no-wheel or resolve-conflict, as in real matrices) from an EMPTY uv cache, as
   `python -m matrix run --backend venv --config ... --results ... --rerun` in a subprocess.

Printed: the total wall time (start-up, the cells, after the last cell), cells by outcome, the
cells that installed and probed, time per probed cell, the peak RSS of the tool's own process,
and the bytes fetched against the unique wheels in the cold cache. Each target with ok / MISSED,
exit status 1 when one is missed.

Definitions, since each could be read several ways:

- A cell *installed and probed* when its install finished and the probe driver's report is its
  verdict: its log directory has probes.jsonl. Most cells that resolve together hold the same
  files as a layered cell and take that cell's probe run (probing.SharedProbes:
  probes-shared-with) instead of running their own; the two kinds cost very differently and
  their mix differs from matrix to matrix, so both are shown apart.
- *Time per probed cell*, the target: the mean `duration_s` (records.jsonl: the cell's own time
  from its first installer command to its verdict, waits for other cells included) of the probed
  cells that ran the probes themselves, 800-cell run over the 12-cell run from empty caches, ≤ 1.2:
  like for like, since a cell that is the first to use a wheel pays its download, unpacking and
  bytecode. The ratio to the warm 12-cell figure is printed beside it, and so are the same 12
  cells' durations inside the 800-cell run, the mean over every probed cell, and wall time /
  probed cells (which also carries the cells that stopped at the installer).
- *Peak RSS of the tool*: the high-water mark (VmHWM) of the process that ran the command line
  (benchmarks/rsslaunch.py), never its children's nor this harness's; ≤ 300 MB. Its RSS is also sampled as the
  cells finish, to show growth per cell.
- *Bytes*: this machine's proxy sends index pages without cache headers, so every online
  resolution reads them again (about 3 MB for numpy + scipy); they are not wheels. The sweep's
  installers therefore reach the index through a byte-counting CONNECT proxy of this benchmark,
  which tells the wheel host (files.pythonhosted.org: wheels and their PEP 658 metadata) from the
  index host (pypi.org). Target: wheel-host bytes / the unique wheels in the cold cache (their
  sizes from the index: bench.unique_wheel_bytes) ≤ 1.05. The machine's received bytes
  (baselines.rx_bytes, any other traffic of the machine included) are printed too.

Needs pyenv's (or PATH's) python3.10 to 3.13 and the package index; never installs torch.
Timings are the machine's: on a shared 2-core machine they move by tens of percent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import baselines
from benchmarks.bench import unique_wheel_bytes
from benchmarks.counting_proxy import WHEEL_HOST, CountingProxy
from matrix import sweep
from matrix.store import Outcome, Record, load_records

HERE = Path(__file__).resolve().parent
MATRIX_12 = HERE / "matrix-12.yaml"
MATRIX_800 = HERE / "matrix-800.yaml"
LAUNCHER = HERE / "rsslaunch.py"
TARGETS = {"per_cell": 1.2, "rss_mb": 300.0, "bytes": 1.05}
# A cell's verdict line in a run's output (sweep._Sweep.finish_line): "<pad> [cell:] outcome in 1.2s".
_VERDICT = re.compile(r"^ +(?:\S+: )?(?:" + "|".join(re.escape(o.value) for o in Outcome) + r") in [0-9.]+s")


@dataclass
class Run:
    """One `compat-matrix run` through the launcher: its records, timings and resource use."""

    seconds: float
    records: list[Record]
    results: Path
    usage: dict[str, float]
    # Seconds from the start to the first cell's line, and from the last cell's verdict to the exit.
    startup_s: float = 0.0
    tail_s: float = 0.0
    # (seconds since the start, cells finished, the tool's RSS in MB), sampled every second.
    rss: list[tuple[float, int, float]] = field(default_factory=list)
    output: str = ""

    @property
    def outcomes(self) -> dict[str, str]:
        return {r.cell: r.outcome.value for r in self.records}

    def probed(self) -> tuple[list[Record], list[Record]]:
        """(cells that ran their own probes, cells that took another's probe run): see the docstring."""
        own, shared = [], []
        for r in self.records:
            logs = self.results / "logs" / r.cell
            if (logs / "probes.jsonl").is_file():
                (shared if (logs / "probes-shared-with").is_file() else own).append(r)
        return own, shared


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_matrix(config: Path, results: Path, env: dict[str, str], extra: tuple[str, ...] = ()) -> Run:
    """`python -m matrix run --backend venv --config CONFIG --results RESULTS --rerun` in a child
    process (through the launcher), its output read line by line as it comes (for the phases)."""
    shutil.rmtree(results, ignore_errors=True)
    usage_file = results.parent / f"{results.name}.usage.json"
    cmd = [sys.executable, str(LAUNCHER), str(usage_file), "run", "--backend", "venv", "--config", str(config),
           "--results", str(results), "--rerun", *extra]
    lines: list[tuple[float, str]] = []
    samples: list[tuple[float, int, float]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    finished = [0]

    def sample() -> None:
        while proc.poll() is None:
            mb = _rss_mb(proc.pid)
            if mb is not None:
                samples.append((time.perf_counter() - t0, finished[0], mb))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.perf_counter() - t0
        lines.append((now, line))
        if _VERDICT.match(line):
            finished[0] += 1
    code = proc.wait()
    seconds = time.perf_counter() - t0
    sampler.join()
    output = "".join(text for _, text in lines)
    if code != 0:
        raise SystemExit(f"growth: {' '.join(cmd)} failed ({code}):\n{output[-4000:]}")
    records = load_records(results / "records.jsonl")
    usage = json.loads(usage_file.read_text(encoding="utf-8"))
    cell_lines = [t for t, text in lines if text.startswith("[")]
    verdicts = [t for t, text in lines if _VERDICT.match(text)]
    return Run(seconds, records, results, usage, startup_s=cell_lines[0] if cell_lines else 0.0,
               tail_s=seconds - verdicts[-1] if verdicts else 0.0, rss=samples, output=output)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _check(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.growth", description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, help="keep the 800-cell run's results here (default: a temporary "
                                                 "directory)")
    ap.add_argument("--expect", type=Path, help="records.jsonl of an earlier run of the same matrix: every cell "
                                                "must have the same outcome (exit 1 otherwise)")
    ap.add_argument("--select", action="append", default=[], help="run only these cells of the 800 (glob, as "
                                                                   "`run --select`; for looking into one part)")
    args = ap.parse_args(argv)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # a machine setting here; real runs do not have it
    missed: list[str] = []

    def target(name: str, label: str, value: float, ok: bool) -> None:
        print(f"{label:<78}{value:>9.2f}   {_check(ok)}")
        if not ok:
            missed.append(name)

    with tempfile.TemporaryDirectory(prefix="compat-matrix-growth-") as tmp:
        work = Path(tmp)
        env = dict(os.environ)
        print(f"compat-matrix growth: venv backend, {sweep.default_jobs()} jobs (the default), "
              f"{os.cpu_count()} cores", flush=True)

        proxy = CountingProxy()
        env = proxy.environ(env)

        def fresh(name: str) -> dict[str, str]:
            """Empty package and tool caches of their own (the verdicts, bytecode, index answers)."""
            return dict(env, UV_CACHE_DIR=str(work / name / "uv"), COMPAT_MATRIX_CACHE=str(work / name / "tool"))

        # Like for like: the 12 cells as the 800 run, from empty caches (better of two); then again
        # with those caches warm, as bench.py times them (better of two), for reference.
        print("the 12-cell matrix: twice from empty caches, twice more with them warm ...", flush=True)
        colds = [run_matrix(MATRIX_12, work / f"r12-cold-{i}", fresh(f"c12-{i}")) for i in range(2)]
        warms = [run_matrix(MATRIX_12, work / f"r12-warm-{i}", fresh("c12-1")) for i in range(2)]

        def own_mean(r: Run) -> float:
            return _mean([x.duration_s for x in r.probed()[0]])

        small, warm = min(colds, key=own_mean), min(warms, key=own_mean)
        small_own, small_shared = small.probed()
        small_mean = own_mean(small)
        small_all = _mean([r.duration_s for r in small_own + small_shared])
        for label, r, runs in (("from empty caches", small, colds), ("warm caches", warm, warms)):
            o, sh = r.probed()
            print(f"12 cells, {label}: {r.seconds:.1f} s wall, {len(o) + len(sh)} installed and probed "
                  f"({len(o)} own probe runs, {len(sh)} shared); mean duration_s {own_mean(r):.2f} s (own probe "
                  f"runs), {_mean([x.duration_s for x in o + sh]):.2f} s (all probed); wall / probed "
                  f"{r.seconds / max(1, len(o) + len(sh)):.2f} s (own, the two runs: "
                  f"{', '.join(f'{own_mean(x):.2f}' for x in runs)} s)")

        results = args.results or work / "r800"
        big_env = fresh("c800")
        cold = Path(big_env["UV_CACHE_DIR"])
        before = Counter(proxy.received)
        extra = tuple(x for p in args.select for x in ("--select", p))
        print(f"the 800-cell matrix ({MATRIX_800.name}) from an empty uv cache ({cold}) ...", flush=True)
        rx0 = baselines.rx_bytes()
        big = run_matrix(MATRIX_800, results, big_env, extra)
        rx = baselines.rx_bytes() - rx0
        proxy.close()
        received = proxy.received - before
        own, shared = big.probed()
        probed = own + shared
        counts = Counter(r.outcome.value for r in big.records)
        print()
        print(f"{len(big.records)} cells: {big.seconds:.1f} s wall (start-up to the first cell {big.startup_s:.1f} s, "
              f"after the last verdict {big.tail_s:.1f} s)")
        print("  outcomes: " + ", ".join(f"{n} {o}" for o, n in counts.most_common()))
        print(f"  installed and probed: {len(probed)} ({len(own)} own probe runs, {len(shared)} shared); "
              f"stopped at the installer or infra: {len(big.records) - len(probed)}")
        mean_own = _mean([r.duration_s for r in own])
        mean_all = _mean([r.duration_s for r in probed])
        mean_rest = _mean([r.duration_s for r in big.records if r not in probed])
        print(f"  mean duration_s: own probe runs {mean_own:.2f} s, all probed {mean_all:.2f} s "
              f"(12 cells: {small_all:.2f} s), the cells that did not probe {mean_rest:.2f} s")
        same = {r.cell for r in small_own}
        inside = [r.duration_s for r in own if r.cell in same]
        print(f"  the 12-cell run's own probe runs, the same cells inside this run: {_mean(inside):.2f} s "
              f"({len(inside)} of {len(same)}; alone {small_mean:.2f} s)")
        print(f"  wall / probed cells {big.seconds / max(1, len(probed)):.2f} s "
              f"(12 cells: {small.seconds / max(1, len(small_own) + len(small_shared)):.2f} s); "
              f"wall / cells {big.seconds / max(1, len(big.records)):.2f} s")
        print(f"  the tool's own CPU: {big.usage['utime_s'] + big.usage['stime_s']:.1f} s "
              f"({1000 * (big.usage['utime_s'] + big.usage['stime_s']) / max(1, len(big.records)):.0f} ms a cell)")
        if big.rss:
            marks = sorted({min(len(big.rss) - 1, i * len(big.rss) // 5) for i in range(6)})
            print("  the tool's RSS as cells finish: " + ", ".join(
                f"{big.rss[i][1]} cells {big.rss[i][2]:.0f} MB" for i in marks))
        print()
        target("per_cell", f"time per probed cell: mean duration_s of own probe runs, 800 / 12 "
               f"(≤ {TARGETS['per_cell']}×)", mean_own / small_mean, mean_own / small_mean <= TARGETS["per_cell"])
        print(f"{'  (against the 12 cells with warm caches, for reference)':<78}{mean_own / own_mean(warm):>9.2f}")
        peak = big.usage["peak_rss_mb"]
        target("rss", f"peak RSS of the tool's process, MB (≤ {TARGETS['rss_mb']:.0f})", peak,
               peak <= TARGETS["rss_mb"])
        unique, wheels = unique_wheel_bytes(cold)
        wheel_host = received.get(WHEEL_HOST, 0)
        others = {h: n for h, n in received.items() if h != WHEEL_HOST}
        print(f"bytes: {len(wheels)} unique wheels in the cold cache, {unique / 1e6:.1f} MB; received from "
              f"{WHEEL_HOST} {wheel_host / 1e6:.1f} MB; from "
              + (", ".join(f"{h} {n / 1e6:.1f} MB" for h, n in sorted(others.items())) or "no other host")
              + f" (index pages); the machine received {rx / 1e6:.1f} MB in all")
        ratio = wheel_host / unique if unique else float("nan")
        target("bytes", f"bytes from {WHEEL_HOST} / unique wheel bytes (≤ {TARGETS['bytes']})", ratio,
               ratio <= TARGETS["bytes"])

        if args.expect is not None:
            expected = {r.cell: r.outcome.value for r in load_records(args.expect)}
            now = big.outcomes
            differ = [f"{c}: {now.get(c)} now, {o} in {args.expect}" for c, o in sorted(expected.items())
                      if c in now and now[c] != o]
            print(f"same outcomes as {args.expect} ({sum(c in now for c in expected)} cells): {_check(not differ)}")
            for line in differ:
                print(f"  {line}")
            missed += ["outcomes"] if differ else []
    print()
    print("all targets met" if not missed else f"missed: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
