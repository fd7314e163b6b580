"""Micro-benchmarks for the speed targets of issue #7 that need no engine and no index.

    python -m benchmarks.micro

1. Planning 10 000 cells (matrix.spec.load of a matrix file, matrix.cells.plan, matrix.cells.select)
   takes < 1 s.
2. Building the table from 100 000 records (report.table, report.pivot, the Markdown, and
   report.write() as a whole: records.jsonl, CSV, Markdown, HTML, JUnit, JSON) takes < 5 s.

Each part is printed, then the totals against the targets; the exit status is 1 when a target is
missed. Timings, not tests: they vary with the machine and its load.

The inputs are synthetic but shaped like a real sweep: several bases, many pins, both modes, an
exclude and an include; records with a mix of outcomes, errors that name their pins (so most error
texts differ), some that the registry's known issue matches and some that no entry matches.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matrix import cells, exports, registry, report, spec
from matrix.store import Outcome, Record, records_jsonl

PLAN_TARGET_S = 1.0
TABLE_TARGET_S = 5.0
REGISTRY_FILE = Path(__file__).resolve().parent.parent / "registry" / "known-issues.yaml"

# More entries than the repository's one: a real registry grows, and every failing cell is matched
# against each entry in turn.
EXTRA_ISSUES = """
- issue: scipy_needs_newer_numpy
  error: {regex: "scipy [0-9.]+ requires numpy>=[0-9.]+"}
  cause: "SciPy's declared minimum NumPy"
  solution: "pip install numpy==1.26.4 scipy==1.11.4"
- issue: abi_mismatch_multiarray
  error: "_ARRAY_API not found"
  cause: "a module compiled against NumPy 1.x imported under NumPy 2"
  solution: "pip install numpy==1.26.4"
- issue: glibc_too_old
  error: {regex: "(?i)GLIBC_[0-9.]+' not found"}
  cause: "the wheel needs a newer glibc than the base has"
  solution: "pip install numpy==1.26.4 scipy==1.11.4"
"""


def _versions(major: int, n: int) -> list[str]:
    """n distinct plain versions: major.minor.patch."""
    return [f"{major}.{i // 5}.{i % 5}" for i in range(n)]


def matrix_yaml(n_cells: int = 10_000) -> str:
    """A matrix file of about n_cells cells: 4 bases × numpy × scipy × 2 modes, one exclude, one include.

    For 10 000: 4 × 50 × 25 × 2 = 10 000 in the product, 2 × 25 = 50 of them excluded, 2 included.
    """
    per_base_mode = max(1, n_cells // 8)
    n_scipy = max(1, min(25, per_base_mode))
    n_numpy = max(1, per_base_mode // n_scipy)
    numpy_versions = _versions(1, n_numpy)
    scipy_versions = _versions(1, n_scipy)
    bases = "\n".join(f'  py31{i}: {{image: "python:3.1{i}-slim-bookworm", python: "3.1{i}"}}'
                      for i in range(4))
    return f"""
bases:
{bases}
packages:
  numpy: [{", ".join(f'"{v}"' for v in numpy_versions)}]
  scipy: [{", ".join(f'"{v}"' for v in scipy_versions)}]
modes: [together, layered]
layered_order: [scipy, numpy]
exclude:
  - {{base: py310, numpy: "{numpy_versions[-1]}", reason: "numpy dropped 3.10"}}
  - {{base: py311, mode: layered, numpy: "{numpy_versions[0]}", scipy: "{scipy_versions[-1]}", reason: "slow"}}
include:
  - {{base: py313, numpy: "2.2.6", scipy: "1.15.2", reason: "the pins production runs"}}
install: {{only_binary: true, ca_bundle: none}}
limits: {{timeout_s: 300, memory: 4g}}
"""


def _best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def plan_seconds(n_cells: int = 10_000, repeat: int = 3) -> tuple[float, int]:
    """Best-of-`repeat` seconds to load, validate, plan and select a matrix of about n_cells; cells planned."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matrix.yaml"
        path.write_text(matrix_yaml(n_cells), encoding="utf-8")

        def run() -> int:
            s = spec.load(path)
            planned = cells.plan(s)
            cells.select(planned.cells, ["py31*-layered", "*-numpy1.1.*-together"])  # a user's --only
            return len(planned.cells)

        return _best_of(repeat, run)


def _error(outcome: Outcome, pins: dict[str, str], base: str, i: int) -> str:
    numpy, scipy = pins["numpy"], pins["scipy"]
    py = f"/opt/venv-{base}/lib/python3.11/site-packages"
    match outcome:
        case Outcome.PASS:
            return ""
        case Outcome.WARN:
            return f"imports: import scipy.linalg: UserWarning: A NumPy version >={numpy} is required"
        case Outcome.IMPORT_ERROR:
            if i % 2:
                return (f"imports: import scipy.stats: ValueError: numpy.dtype size changed, may indicate binary "
                        f"incompatibility. Expected 96 from C header, got 88 from PyObject\n  File \"{py}/scipy/"
                        f"stats/__init__.py\", line 610, in <module>")
            return (f"imports: import scipy.special: ImportError: A module that was compiled using NumPy 1.x cannot "
                    f"be run in NumPy {numpy}; _ARRAY_API not found")
        case Outcome.CRASH:
            return f"ufuncs: probe died on SIGSEGV at 0x7f{i:08x} in {py}/numpy/core/_multiarray_umath.so"
        case Outcome.TIMEOUT:
            return "linalg: probe outran its limit of 120 s"
        case Outcome.RESOLVE_CONFLICT:
            if i % 3 == 0:
                return f"ERROR: Cannot install numpy=={numpy} and scipy=={scipy}: scipy {scipy} requires numpy>=9.0"
            return (f"× No solution found when resolving dependencies: Because scipy=={scipy} depends on "
                    f"numpy>=2.3 and you require numpy=={numpy}, we can conclude that your requirements are "
                    "unsatisfiable.")
        case Outcome.NO_WHEEL:
            return f"ERROR: No matching distribution found for numpy=={numpy} (only has source distributions)"
        case Outcome.BUILD_ERROR:
            return f"error: subprocess-exited-with-error: Building wheel for scipy ({scipy}) failed: gfortran not found"
        case _:
            return "Read timed out. (read timeout=15)"


# Roughly what a broad sweep sees: most cells pass, the failures spread over every outcome.
_WEIGHTS = {
    Outcome.PASS: 60, Outcome.WARN: 5, Outcome.IMPORT_ERROR: 12, Outcome.CRASH: 2, Outcome.TIMEOUT: 1,
    Outcome.RESOLVE_CONFLICT: 12, Outcome.NO_WHEEL: 4, Outcome.BUILD_ERROR: 2, Outcome.INFRA_ERROR: 2,
}


def synthetic_records(n_records: int = 100_000, seed: int = 7) -> list[Record]:
    """n_records records, one per cell of a planned matrix (4 bases × numpy × scipy × 2 modes, sliced)."""
    per_base_mode = -(-n_records // 8)
    n_scipy = 25
    n_numpy = -(-per_base_mode // n_scipy)
    rng = random.Random(seed)
    outcomes = list(_WEIGHTS)
    weights = list(_WEIGHTS.values())
    numpy_versions = _versions(1, n_numpy)
    scipy_versions = _versions(1, n_scipy)
    out: list[Record] = []
    i = 0
    for b in range(4):
        base = f"py31{b}"
        for numpy in numpy_versions:
            for scipy in scipy_versions:
                for mode in ("together", "layered"):
                    if len(out) == n_records:
                        return out
                    cell = cells.Cell(base, mode, (("numpy", numpy), ("scipy", scipy)))
                    outcome = rng.choices(outcomes, weights)[0]
                    pins = cell.pin_dict
                    installed: dict[str, str | None] = dict(pins)
                    if outcome in (Outcome.RESOLVE_CONFLICT, Outcome.NO_WHEEL, Outcome.BUILD_ERROR):
                        installed = {"numpy": None, "scipy": None}
                    out.append(Record.for_cell(
                        cell, backend="docker", run_id="20240501T120000-bench", outcome=outcome,
                        error=_error(outcome, pins, base, i), installed=installed,
                        duration_s=round(rng.uniform(2.0, 90.0), 2), python=f"3.1{b}.{rng.randint(0, 9)}",
                        engine="unix:///var/run/docker.sock", base_id=f"sha256:{b:064x}"))
                    i += 1
    return out


def bench_registry() -> registry.Registry:
    return registry.parse(REGISTRY_FILE.read_text(encoding="utf-8") + EXTRA_ISSUES, REGISTRY_FILE)


def table_seconds(n_records: int = 100_000, out_dir: Path | None = None) -> dict[str, float]:
    """Seconds for each step of building the table from n_records records, and "total" for report.write().

    The parts are timed on their own (each from the records, or from the table where that is its
    input), then report.write() once as a whole, writing into out_dir.
    """
    if out_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return table_seconds(n_records, Path(tmp))
    records = synthetic_records(n_records)
    packages = ("numpy", "scipy")
    names = report.packages_of(records, packages)
    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        times[name] = time.perf_counter() - t0
        return result

    # A registry remembers what it matched: each timing that matches starts from a fresh one.
    timed("registry.matches", lambda: bench_registry().matches(records))
    notes = timed("annotate", lambda: registry.annotate(bench_registry(), records))
    df = timed("table", lambda: report.table(records, packages, notes))
    grid = timed("pivot", lambda: report.pivot(df, names))
    timed("records.jsonl", lambda: records_jsonl(records))
    timed("matrix.csv", lambda: df.to_csv(index=False))
    timed("matrix.md", lambda: report.markdown(df, names, notes))
    timed("matrix.html", lambda: exports.html(df, names, grid))
    timed("junit.xml", lambda: exports.junit(df))
    timed("matrix.json", lambda: exports.as_json(df))
    out_dir.mkdir(parents=True, exist_ok=True)
    # The whole of what a run does for its table: the registry's annotations, then every file.
    timed("total", lambda: report.write(records, out_dir, packages, registry.annotate(bench_registry(), records)))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000, help="cells to plan (default 10000)")
    parser.add_argument("--records", type=int, default=100_000, help="records to tabulate (default 100000)")
    parser.add_argument("--out", type=Path, help="where report.write() writes (default: a temporary directory)")
    args = parser.parse_args(argv)

    seconds, n = plan_seconds(args.cells)
    ok_plan = seconds < PLAN_TARGET_S
    print(f"plan: {n} cells in {seconds:.3f} s (best of 3; target < {PLAN_TARGET_S:g} s) "
          f"{'ok' if ok_plan else 'MISSED'}")

    times = table_seconds(args.records, args.out)
    for name, t in times.items():
        if name != "total":
            print(f"  {name:<17} {t:7.3f} s")
    ok_table = times["total"] < TABLE_TARGET_S
    print(f"table: {args.records} records, report.write() in {times['total']:.3f} s "
          f"(target < {TABLE_TARGET_S:g} s) {'ok' if ok_table else 'MISSED'}")
    return 0 if ok_plan and ok_table else 1


if __name__ == "__main__":
    raise SystemExit(main())
