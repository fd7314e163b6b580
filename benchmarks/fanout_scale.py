"""Issue #16's scale targets: planning, sharding and merging 100 000 cells over 100 shards.

    python -m benchmarks.fanout_scale [--cells-per-axis 100] [--shards 100] [--out DIR]

1. Planning: a matrix file of 5 bases x 100 numpy x 100 scipy x 2 modes (100 000 cells) loaded and
   planned (matrix.spec.load, matrix.cells.plan).
2. Sharding: what each node pays to find its part (one cells.shard call), and all 100 parts
   computed one after another (what one machine would pay to check the partition).
3. Merging: 100 shard directories of 1 000 records each (synthetic verdicts of this matrix) joined
   by matrix.run.merge into one ledger and table (records.jsonl, CSV, Markdown, HTML, JUnit, JSON).

Printed: each part's time, the total of planning + one shard + merge, and the peak resident memory
of the process; exit 1 when the total is over 5 s or the memory over 500 MB. Timings, not tests.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.rsslaunch import peak_rss_mb
from matrix import cells, spec
from matrix import run as pipeline
from matrix.ledger import matrix_digest
from matrix.store import Outcome, Record, records_jsonl

TIME_TARGET_S = 5.0
MEMORY_TARGET_MB = 500.0
OUTCOMES = [Outcome.PASS] * 8 + [Outcome.IMPORT_ERROR, Outcome.RESOLVE_CONFLICT, Outcome.NO_WHEEL]


def matrix_file(path: Path, per_axis: int) -> None:
    versions = ", ".join(f'"1.{i}.0"' for i in range(per_axis))
    bases = "\n".join(f'  b{i}: {{python: "3.11"}}' for i in range(5))
    path.write_text(f"bases:\n{bases}\npackages:\n  numpy: [{versions}]\n  scipy: [{versions}]\n"
                    "modes: [together, layered]\nlayered_order: [scipy, numpy]\ninstall: {ca_bundle: none}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells-per-axis", type=int, default=100)
    ap.add_argument("--shards", type=int, default=100)
    # The merged results kept (the synthetic verdicts are seeded): two versions of the merge can be
    # compared file by file, the history entry's name (a new run id each merge) aside.
    ap.add_argument("--out", type=Path, help="where the merge writes (default: a temporary directory)")
    args = ap.parse_args()
    rng = random.Random(16)
    with tempfile.TemporaryDirectory(prefix="compat-matrix-fanout-bench-") as tmp:
        work = Path(tmp)
        config = work / "matrix.yaml"
        matrix_file(config, args.cells_per_axis)

        t0 = time.perf_counter()
        s = spec.load(config)
        plan = cells.plan(s)
        plan_s = time.perf_counter() - t0
        total = len(plan.cells)

        t0 = time.perf_counter()
        cells.shard(plan.cells, args.shards // 2 or 1, args.shards)
        one_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        parts = [cells.shard(plan.cells, k, args.shards) for k in range(1, args.shards + 1)]
        all_s = time.perf_counter() - t0
        sizes = [len(p) for p in parts]
        assert sum(sizes) == total and max(sizes) - min(sizes) <= 1

        digest = matrix_digest(s)
        dirs = []
        for k, part in enumerate(parts, start=1):
            d = work / "shards" / f"shard-{k}"
            d.mkdir(parents=True)
            run_id = f"20261130T0000{k % 60:02d}Z-{k:06x}"
            rows = [Record(cell=c.id, base=c.base, mode=c.mode, pins=c.pin_dict, outcome=rng.choice(OUTCOMES),
                           run_id=run_id, matrix=digest, backend="venv", duration_s=rng.random() * 30,
                           error="" if rng.random() < 0.8 else f"{c.id}: synthetic failure")
                    for c in part]
            (d / "records.jsonl").write_text(records_jsonl(rows))
            dirs.append(d)
        del parts
        t0 = time.perf_counter()
        options = pipeline.Options(config=config, results=args.out or work / "merged")
        result = pipeline.merge(options, dirs, echo=lambda _: None)
        merge_s = time.perf_counter() - t0
        assert result.status == 0 and len(result.table) == total, (result.status, result.problems[:1])

    memory = peak_rss_mb()
    sum_s = plan_s + one_s + merge_s
    print(f"cells: {total} over {args.shards} shards (sizes {min(sizes)}..{max(sizes)})")
    print(f"plan:                   {plan_s:6.2f} s")
    print(f"one shard's part:       {one_s:6.2f} s   (all {args.shards} parts: {all_s:.2f} s)")
    print(f"merge of {args.shards} directories: {merge_s:6.2f} s")
    ok_t, ok_m = sum_s < TIME_TARGET_S, memory < MEMORY_TARGET_MB
    print(f"plan + shard + merge:   {sum_s:6.2f} s   (< {TIME_TARGET_S:.0f} s: {'met' if ok_t else 'MISSED'})")
    print(f"peak memory:            {memory:6.0f} MB  (< {MEMORY_TARGET_MB:.0f} MB: {'met' if ok_m else 'MISSED'})")
    return 0 if ok_t and ok_m else 1


if __name__ == "__main__":
    sys.exit(main())
