"""The command line: `compat-matrix run | list | reproduce | pins | preflight | guard | registry`
(also `python -m matrix`).

A chain of small steps (load → plan → select → run → report); each ends the command with an
exit code from errors.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import gc
import json
import shlex
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from matrix import (
    __version__,
    cells,
    history,
    install,
    locks,
    probing,
    registry,
    registry_cli,
    resultcache,
    spec,
    sweep,
)
from matrix.classify import Outcome
from matrix.errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, CompatMatrixError, ConfigError, EngineUnavailable
from matrix.install import redact
from matrix.registry import Registry
from matrix.store import Record, load_records, summary


def _err(message: str) -> None:
    print(f"compat-matrix: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compat-matrix",
                                description="Which combinations of package pins work on which base.")
    p.add_argument("--version", action="version", version=f"compat-matrix {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", default="matrix.yaml", type=Path,
                        help="the matrix file (default: matrix.yaml)")
        sp.add_argument("--as-of", type=_date, metavar="YYYY-MM-DD",
                        help="axes given as specifiers ignore releases uploaded after this day")

    run = sub.add_parser("run", help="build, probe and classify every selected cell")
    config_arg(run)
    run.add_argument("--results", default="results", type=Path, help="output directory (default: results)")
    run.add_argument("--select", action="append", metavar="GLOB",
                     help="only cells whose id matches (repeatable), e.g. 'bookworm-py311-*'")
    run.add_argument("--keep", action="store_true",
                     help="keep each cell's venv (on the cache volume, for docker) for inspection; runs every "
                          "selected cell, as --rerun does")
    run.add_argument("--fail-on-regression", action="store_true",
                     help="exit 1 when a cell that worked in the table this run replaces now fails (for "
                          "scheduled sweeps)")
    run.add_argument("--shard", metavar="K/N", help="run only shard K of N (stable by cell id); "
                     "`compat-matrix merge` joins the shards' results")
    run.add_argument("--registry", type=Path, metavar="FILE",
                     help="the known-issue registry (default: registry/known-issues.yaml beside the matrix "
                          "file, when there is one); its known-good pins are refreshed after the run")
    run.add_argument("--resume", action="store_true",
                     help="keep the verdicts already in RESULTS/records.jsonl; run only the cells without one "
                          "(not run, or infra-error)")
    run.add_argument("--jobs", "-j", type=_jobs, default=None, metavar="N",
                     help=f"cells run in parallel (default: {sweep.default_jobs()} on this machine: one per core "
                          "and one more)")
    run.add_argument("--rerun", action="store_true",
                     help="run every cell even when the result cache holds its verdict under an unchanged key")
    run.add_argument("--backend", choices=("auto", "docker", "venv"), default="auto",
                     help="docker: a throwaway image per cell; venv: a throwaway virtual environment "
                          "per cell, no daemon; auto (default): docker when an engine answers, else venv")

    ls = sub.add_parser("list", help="print the cells, one id per line; nothing is built")
    config_arg(ls)
    ls.add_argument("--select", action="append", metavar="GLOB")
    ls.add_argument("--shard", metavar="K/N", help="only the cells of shard K of N")

    mg = sub.add_parser("merge", help="join the results of shard runs into one table")
    config_arg(mg)
    mg.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="results directories of the shards")
    mg.add_argument("--results", default="results", type=Path, help="where the joined table goes")
    mg.add_argument("--registry", type=Path, metavar="FILE", help="as for run")
    mg.add_argument("--fail-on-regression", action="store_true",
                    help="exit 1 when a cell that worked in the table being replaced now fails")

    df = sub.add_parser("diff", help="what changed between two runs (exit 1 on a regression)")
    df.add_argument("a", metavar="RUN_A", help="a run id (results/history/<id>.jsonl) or a records file")
    df.add_argument("b", metavar="RUN_B")
    df.add_argument("--results", default="results", type=Path)

    cl = sub.add_parser("clean", help="remove what compat-matrix keeps between runs: the result cache, shared "
                        "bytecode and index answers here, the prefix images and the package cache volume on the engine")
    cl.add_argument("--engine-only", action="store_true", help="keep what is kept on this machine")

    sh = sub.add_parser("shards", help="print a CI matrix of N shards")
    sh.add_argument("--github", type=int, metavar="N", required=True,
                    help="N shards as GitHub Actions matrix JSON: {\"shard\": [\"1/N\", ...]}")

    rep = sub.add_parser("reproduce", help="print the Dockerfile and commands that rebuild one cell")
    config_arg(rep)
    rep.add_argument("cell", metavar="CELL_ID")
    rep.add_argument("--write", type=Path, metavar="DIR",
                     help="also lay out the build context in DIR, ready for docker build")
    COMMANDS.update(registry_cli.add_commands(sub))
    return p


def _load_spec(args: argparse.Namespace) -> spec.Spec:
    """The matrix file, its specifier axes filled from the index (as of --as-of, if given)."""
    return spec.expand(spec.load(args.config), getattr(args, "as_of", None))


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of cells (1 or more)")
    return int(text)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _selected(args: argparse.Namespace) -> tuple[spec.Spec, cells.Plan, tuple[cells.Cell, ...]]:
    s = _load_spec(args)
    plan = cells.plan(s)
    chosen = cells.select(plan.cells, args.select)
    if getattr(args, "shard", None):
        try:
            k, n = cells.parse_shard(args.shard)
        except ValueError as e:
            raise ConfigError(str(args.config), "--shard", str(e), "e.g. --shard 2/4") from None
        chosen = cells.shard(chosen, k, n)
        if not chosen:  # a small matrix over many shards: this shard has nothing to do
            print(f"shard {args.shard} holds no cell of this matrix", file=sys.stderr)
    if not chosen and not getattr(args, "shard", None):
        hint = f" (e.g. {plan.cells[0].id})" if plan.cells else ""
        raise ConfigError(str(args.config), "--select", f"{args.select} matches no cell",
                          f"run `compat-matrix list --config {args.config}` for the ids{hint}")
    return s, plan, chosen


def cmd_list(args: argparse.Namespace) -> int:
    _, plan, chosen = _selected(args)
    for c in chosen:
        print(c.id)
    for ex in plan.excluded:
        print(f"excluded: {ex.cell.id} ({ex.reason})", file=sys.stderr)
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    s = _load_spec(args)
    plan = cells.plan(s)
    found = {c.id: c for c in plan.cells} | {e.cell.id: e.cell for e in plan.excluded}
    cell = found.get(args.cell)
    if cell is None:
        close = difflib.get_close_matches(args.cell, list(found), n=1)
        raise ConfigError(str(args.config), "CELL_ID", f"no cell {args.cell!r} in this matrix",
                          f"did you mean {close[0]}?" if close else "see `compat-matrix list`")
    base = s.base(cell.base)
    pins_env = shlex.quote("COMPAT_MATRIX_PINS=" + json.dumps(cell.pin_dict))
    if base.image is None:
        # An interpreter-only base: the venv backend's recipe, as shell lines.
        print(f"# Rebuild cell {cell.id} (venv backend: {base.name} names an interpreter, no image)")
        print(f"uv venv --python {shlex.quote(base.python or 'python3')} cell-venv")
        for argv in install.uv_commands(cell, s, "uv", "cell-venv/bin/python", list(s.install.find_links)):
            print(redact(shlex.join(argv)))
        print(f"env {pins_env} cell-venv/bin/python {shlex.quote(str(probing.probes_dir() / '_driver.py'))}")
        return EXIT_OK
    from uv import find_uv_bin

    from matrix import dockerfile  # here: only reproduce renders a Dockerfile

    ctx = dockerfile.context(cell, s, Path(find_uv_bin()))
    tag = "compat-matrix-repro:latest"
    print(f"# Rebuild cell {cell.id}")
    if args.write:
        ctx.write(args.write)
        print(f"# build context written to {args.write}")
        where = shlex.quote(str(args.write))
    else:
        print("# Save the Dockerfile below in an empty directory; put beside it:")
        for name, source in sorted(ctx.files.items()):
            if not name.startswith("probes/") and name != "uv":
                print(f"#   {name}  (a copy of {source})")
        print(f"#   probes/  (a copy of {probing.probes_dir()})")
        print(f"#   uv  (a copy of {find_uv_bin()}, or any uv binary for the image's platform)")
        where = "."
    print(f"#   docker build --network host -t {tag} {where}")
    print(f"#   docker run --rm --network none -e {pins_env} {tag} {dockerfile.VENV_PYTHON} {dockerfile.DRIVER}")
    print()
    print(redact(ctx.dockerfile), end="")
    return EXIT_OK


def _registry(args: argparse.Namespace) -> Registry | None:
    """The registry the run matches failures against: given, or the one beside the matrix file."""
    if args.registry is not None:
        return registry.load(args.registry)
    default = args.config.parent / registry.DEFAULT_PATH
    return registry.load(default) if default.is_file() else None


def _backend(choice: str, s: spec.Spec, run_id: str, keep: bool,
             issue_probes: tuple[tuple[str, str], ...]) -> tuple[sweep.Backend, str]:
    """The backend to run, and a line saying which one and why."""
    from matrix.venv_backend import VenvBackend

    def venv() -> VenvBackend:
        return VenvBackend(s, run_id, keep=keep, issue_probes=issue_probes)

    if choice in ("docker", "auto"):
        from matrix.docker_backend import DockerBackend
        from matrix.engine import DockerEngine

        try:
            engine = DockerEngine()
        except EngineUnavailable as e:
            if choice == "docker":
                raise
            return venv(), f"{e}: running the embedded venv backend instead"
        backend = DockerBackend(engine, s, run_id, keep=keep, issue_probes=issue_probes)
        return backend, f"docker backend on {engine.description}"
    return venv(), "venv backend (--backend venv)"


def _verdicts_to_keep(results: Path, cells_: tuple[cells.Cell, ...],
                      base_ids: dict[str, str]) -> dict[str, Record]:
    """For --resume: the last table's verdicts on these cells (an infra-error is no verdict),
    while their base is still what it was (a moved base image or interpreter runs them again)."""
    path = results / "records.jsonl"
    if not path.is_file():
        return {}
    try:
        previous = load_records(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(str(path), "--resume", f"the records cannot be read ({e})",
                          "run without --resume to start afresh") from None
    wanted = {c.id for c in cells_}
    return {r.cell: r for r in previous if r.cell in wanted and r.outcome is not Outcome.INFRA_ERROR
            and r.base_id == base_ids.get(r.base, "")}


def cmd_diff(args: argparse.Namespace) -> int:
    """Exit 1 when the second run regressed against the first (a cell that worked now fails)."""
    d = history.diff(history.load_run(args.a, args.results), history.load_run(args.b, args.results))
    print(history.format_diff(d), end="")
    return EXIT_FAILED if d.regressions else EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    """One table from shard runs, in the matrix's cell order, as an unsharded run writes it."""
    s = _load_spec(args)
    known = _registry(args)
    order = {c.id: i for i, c in enumerate(cells.plan(s).cells)}
    merged: dict[str, Record] = {}
    for d in args.dirs:
        path = d / "records.jsonl"
        if not path.is_file():
            raise ConfigError(str(path), "DIR", "no records here", "pass the --results directories of the shard runs")
        for r in load_records(path):
            if r.cell in merged:
                raise ConfigError(str(path), r.cell, "this cell is in two of the directories",
                                  "merge the results of distinct shards of one matrix")
            merged[r.cell] = r
    records = sorted(merged.values(), key=lambda r: order.get(r.cell, len(order)))
    with_lock = locks.hold_results(args.results)
    try:
        paths, changes = _write_table(records, args.results, s, known)
    finally:
        with_lock.release(remove=False)
    print(f"merged {len(records)} cells from {len(args.dirs)} directories: {summary(records)}")
    print("wrote " + ", ".join(str(p) for p in paths))
    regressed = _print_regressions(changes)
    return EXIT_FAILED if regressed and args.fail_on_regression else EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    """The caches go; every later run starts cold (downloads, prefix builds, every cell runs)."""
    from matrix.docker_backend import CACHE_RUN
    from matrix.engine import DockerEngine, EngineFault

    if not args.engine_only:
        where = resultcache.cache_root()
        shutil.rmtree(where, ignore_errors=True)
        print(f"removed {where} (verdicts, shared bytecode, index answers)")
    try:
        engine = DockerEngine()
    except EngineUnavailable as e:
        print(f"no engine to clean: {e}")
        return EXIT_OK
    try:
        n = engine.remove_cache(CACHE_RUN)
    except EngineFault as e:
        _err(f"cleaning the engine failed: {e}")
        return EXIT_INFRA
    finally:
        engine.close()
    print(f"removed {n} cached object(s) from {engine.description} (prefix images, the package cache volume)")
    return EXIT_OK


def cmd_shards(args: argparse.Namespace) -> int:
    if args.github < 1:
        raise ConfigError("--github", "N", f"{args.github} shards", "give at least 1")
    print(json.dumps({"shard": [f"{k}/{args.github}" for k in range(1, args.github + 1)]}))
    return EXIT_OK


def _write_table(records: list[Record], results: Path, s: spec.Spec, known: Registry | None, *,
                 known_good: bool = True) -> tuple[list[Path], history.Diff | None]:
    """Write the table (compared with the one it replaces) and, with a registry, the known-good
    pins. Shared by run and merge, so a merged table is written as an unsharded run's is."""
    previous = _previous_table(results)
    changes = history.diff(previous, records) if previous is not None else None
    if previous is not None and _same(previous, records) and _table_current(results, known):
        return [], changes  # an unchanged re-run: the table and the known-good pins stand as they are
    # Here, not at the top: pandas takes half a second to import, and an unchanged re-run needs none of it.
    from matrix import report

    paths = report.write(records, results, s.package_names, known,
                         history.format_diff(changes, markdown=True) if changes else None)
    if known is not None and known_good:
        from matrix import knowngood

        paths.append(knowngood.write(records, known, packages=s.package_names))
    return paths, changes


# What report.write() writes: all of them present and the records unchanged, nothing is rewritten.
TABLE_FILES = ("records.jsonl", "matrix.csv", "matrix.md", "matrix.html", "junit.xml", "matrix.json")


def _table_current(results: Path, known: Registry | None) -> bool:
    """Every file of the table is there, written after the registry it names issues from was."""
    if not all((results / f).is_file() for f in TABLE_FILES):
        return False
    if known is None or known.path is None:
        return True
    from matrix import knowngood

    written = (results / "records.jsonl").stat().st_mtime
    try:
        return known.path.stat().st_mtime < written and knowngood.default_path(known).is_file()
    except OSError:
        return False


def _load_report() -> None:
    """Import the table writer (pandas: half a second) while the cells run, not after them."""
    from matrix import report  # noqa: F401 - imported for later


def _same(previous: list[Record], records: list[Record]) -> bool:
    """The same verdicts from the same runs (whether read from the result cache or not)."""
    def plain(rs: list[Record]) -> list[dict[str, object]]:
        return [dict(r.serialize(), cached=False) for r in rs]

    return plain(previous) == plain(records)


def _print_regressions(changes: history.Diff | None) -> bool:
    """Print the regressions of a diff, if any; True when there were some."""
    if changes is None or not changes.regressions:
        return False
    print(f"{len(changes.regressions)} regression(s) since the last run:")
    print(history.format_diff(history.Diff(regressions=changes.regressions)), end="")
    return True


def _previous_table(results: Path) -> list[Record] | None:
    """The records of the table this run replaces, for "changed since the last run"."""
    try:
        return load_records(results / "records.jsonl")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none, or unreadable: this run's table stands without a comparison


def _close_meanwhile(backend: sweep.Backend) -> Callable[[], None]:
    """Start the backend's end-of-run clean-up on a thread; returns what waits for it (and raises
    what it raised)."""
    failed: list[Exception] = []

    def close() -> None:
        try:
            backend.close(interrupted=False)
        except Exception as e:  # noqa: BLE001 - handed to the waiter
            failed.append(e)

    thread = threading.Thread(target=close, name="compat-matrix-close")
    thread.start()

    def closed() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return closed


def cmd_run(args: argparse.Namespace) -> int:
    s, plan, chosen = _selected(args)
    if not chosen:  # an empty shard: an empty table, so a CI fan-out needs no special case
        from matrix import report

        report.write([], args.results, s.package_names)
        return EXIT_OK
    known = _registry(args)
    issue_probes = tuple((i.name, i.probe) for i in known.issues if i.probe) if known else ()
    run_id = sweep.new_run_id()
    # Before anything is written: no engine (with --backend docker), no change to results/.
    backend, why = _backend(args.backend, s, run_id, args.keep, issue_probes)
    print(f"compat-matrix run {run_id}: {why}")
    skipped = {b.name: backend.skip_reason(b) for b in s.bases}
    for reason in sorted({r for r in skipped.values() if r}):
        print(f"skipped: {reason}")
    runnable = tuple(c for c in chosen if not skipped[c.base])
    skipped_cells = [c for c in chosen if skipped[c.base]]
    results: Path = args.results
    try:
        kept = _verdicts_to_keep(results, runnable, {b.name: backend.base_id(b) for b in s.bases
                                                     if not skipped[b.name]}) if args.resume else {}
        runnable = tuple(c for c in runnable if c.id not in kept)
        if not runnable and not kept:
            raise ConfigError(str(args.config), "bases", f"none of the {len(chosen)} selected cells can run on "
                              f"the {backend.name} backend", "see the skipped lines above")
        results_lock = locks.hold_results(results)
    except BaseException:
        backend.close(interrupted=False)
        raise
    run_lock = locks.hold_run(run_id)
    outcome: sweep.SweepResult | None = None
    closed: Callable[[], None] | None = None
    try:
        for note in backend.start():
            print(note)
        print(f"{len(runnable)} cells to run" + (f", {len(kept)} kept from the last run" if kept else "")
              + (f", {len(plan.excluded)} excluded" if plan.excluded else "")
              + (f", {len(skipped_cells)} skipped" if skipped_cells else ""))
        with sweep.sigterm_raises():
            cache = resultcache.ResultCache(s, backend.name, issue_probes)
            outcome = sweep.sweep(runnable, backend, results, run_id, jobs=args.jobs or sweep.default_jobs(),
                                  cache=cache, rerun=args.rerun or args.keep, meanwhile=_load_report)
        if outcome.interrupted is None:
            closed = _close_meanwhile(backend)  # the engine's clean-up while the table is written
        # Kept verdicts first in matrix order, as an uninterrupted run would have written them.
        order = {c.id: i for i, c in enumerate(chosen)}
        outcome.records[:0] = list(kept.values())
        outcome.records.sort(key=lambda r: order.get(r.cell, len(order)))
        outcome.total += len(kept)
        paths, changes = _write_table(outcome.records, results, s, known,
                                      known_good=outcome.interrupted is None)
        if not paths:
            print(f"the table in {results} stands: every verdict is the one it holds")
        if outcome.interrupted is None:
            paths.append(history.keep(outcome.records, results, run_id))
    finally:
        try:
            if closed is None:
                backend.close(interrupted=outcome is None or outcome.interrupted is not None)
            else:
                closed()
        except Exception as e:  # noqa: BLE001 - a failed cleanup must not hide the results
            _err(f"cleanup of run {run_id} failed: {e}")
        run_lock.release()
        results_lock.release(remove=False)
    print(f"{len(outcome.records)}/{outcome.total} cells: {summary(outcome.records)}")
    regressed = _print_regressions(changes)
    print("wrote " + ", ".join(str(p) for p in paths) + f", logs in {results / 'logs'}")
    if outcome.interrupted is not None:
        _err(f"interrupted after {len(outcome.records)} of {outcome.total} cells; the table holds those. "
             "`--resume` runs the rest")
        return outcome.interrupted
    if outcome.stopped:
        _err(f"{outcome.stopped}; mend that, then `--resume` runs the rest")
        return EXIT_INFRA
    if regressed and args.fail_on_regression:
        return EXIT_FAILED
    infra = [r for r in outcome.records if r.outcome is Outcome.INFRA_ERROR]
    if infra:
        _err(f"{len(infra)} cell(s) ended in infra-error (no verdict); see their logs, then `--resume` "
             "runs just those")
        return EXIT_INFRA
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "list": cmd_list, "reproduce": cmd_reproduce, "merge": cmd_merge, "shards": cmd_shards,
    "diff": cmd_diff, "clean": cmd_clean}


def entry() -> int:
    """The process's command line (`compat-matrix`, `python -m matrix`): main(), then the objects it
    made are left out of the interpreter's last garbage collection, which walked every one of them
    on the way out (11 ms of a 0.11 s unchanged re-run); the process ends right after."""
    code = main()
    gc.freeze()
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CompatMatrixError as e:
        _err(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
