"""The command line: `compat-matrix run | merge | list | reproduce | diff | clean | shards` and the
registry's commands (`pins | preflight | guard | registry`, matrix/registry/commands.py); also
`python -m matrix`.

It parses arguments, hands them to the pipeline (run.py: what a run and a merge are), prints what it
gets back, and ends with an exit code from errors.py. It decides nothing about a run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import gc
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from matrix import __version__, cells, history, install, paths, probing, spec, sweep
from matrix import run as pipeline
from matrix.errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, CompatMatrixError, ConfigError, EngineUnavailable, redact
from matrix.registry import commands as registry_cli
from matrix.store import summary


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

    def known_good_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--write-known-good", action="store_true",
                        help="refresh the registry's known-good pins from this --results directory (by default "
                             "only results/ beside the matrix file feeds them)")

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
                          "file, when there is one)")
    known_good_arg(run)
    run.add_argument("--resume", action="store_true",
                     help="keep the verdicts the results directory's ledger holds; run only the cells without one "
                          "(not run, or infra-error) or whose base moved")
    run.add_argument("--jobs", "-j", type=_jobs, default=None, metavar="N",
                     help=f"cells run in parallel (default: {sweep.default_jobs()} on this machine: one per core "
                          f"and one more; docker: {sweep.default_jobs('docker')}, one per core)")
    run.add_argument("--rerun", action="store_true",
                     help="run every cell even when the result cache holds its verdict under an unchanged key")
    run.add_argument("--backend", choices=("auto", "docker", "venv"), default="auto",
                     help="docker: a throwaway image per cell; venv: a throwaway virtual environment "
                          "per cell, no daemon; auto (default): docker when an engine answers, else venv")

    ls = sub.add_parser("list", help="print the cells, one id per line; nothing is built")
    config_arg(ls)
    ls.add_argument("--select", action="append", metavar="GLOB")
    ls.add_argument("--shard", metavar="K/N", help="only the cells of shard K of N")
    ls.set_defaults(results=Path("results"), registry=None, fail_on_regression=False, write_known_good=False)

    mg = sub.add_parser("merge", help="join the results of shard runs into one table")
    config_arg(mg)
    mg.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="results directories of the shards")
    mg.add_argument("--results", default="results", type=Path, help="where the joined table goes")
    mg.add_argument("--registry", type=Path, metavar="FILE", help="as for run")
    known_good_arg(mg)
    mg.add_argument("--fail-on-regression", action="store_true",
                    help="exit 1 when a cell that worked in the table being replaced now fails")
    mg.add_argument("--allow-partial", action="store_true",
                    help="write the table even when cells have no record in the directories (they show as not "
                         "run, and matrix.md says the merge is partial); without it a missing cell is exit 3")

    df = sub.add_parser("diff", help="what changed between two runs (exit 1 on a regression)")
    df.add_argument("a", metavar="RUN_A", help="a run id (results/history/<id>.jsonl) or a records file")
    df.add_argument("b", metavar="RUN_B")
    df.add_argument("--results", default="results", type=Path)

    cl = sub.add_parser("clean", help="remove what compat-matrix keeps between runs: the result cache, shared "
                        "bytecode and index answers here, the prefix images and the package cache volume on the engine")
    cl.add_argument("--engine-only", action="store_true", help="keep what is kept on this machine")

    sh = sub.add_parser("shards", help="fan a sweep out over N shards: a CI matrix, a SLURM job array, "
                        "Kubernetes Indexed Jobs")
    engine = sh.add_mutually_exclusive_group(required=True)
    engine.add_argument("--github", type=int, metavar="N",
                        help="N shards as GitHub Actions matrix JSON: {\"shard\": [\"1/N\", ...]}")
    engine.add_argument("--slurm", type=int, metavar="N",
                        help="a script submitting an sbatch array of N shards and a merge job after it (afterany)")
    engine.add_argument("--k8s", type=int, metavar="N",
                        help="Kubernetes manifests: an Indexed Job of N shards per base image, and a merge Job")
    config_arg(sh)
    sh.add_argument("--results", default="results", type=Path,
                    help="the merged table (default: results); the shards write RESULTS.shards/")
    sh.add_argument("--jobs", "-j", type=_jobs, default=2, metavar="N",
                    help="cells at a time in each shard, and the CPUs each asks for (default: 2)")
    sh.add_argument("--backend", choices=("venv", "docker"), default="venv",
                    help="--slurm: the backend on the nodes (default venv; docker where the nodes run an engine)")
    sh.add_argument("--submit", action="store_true", help="--slurm: submit both jobs with sbatch, print their ids")
    sh.add_argument("--install", metavar="CMD",
                    help="--k8s: the init container's command putting compat-matrix into /opt/compat-matrix")
    sh.add_argument("--parallelism", type=_jobs, metavar="P", help="--k8s: pods of a Job at a time (default: N)")
    sh.add_argument("run_args", nargs="*", metavar="-- RUN-ARG",
                    help="more arguments for each shard's `compat-matrix run` (after --)")

    rep = sub.add_parser("reproduce", help="print the Dockerfile and commands that rebuild one cell")
    config_arg(rep)
    rep.add_argument("cell", metavar="CELL_ID")
    rep.add_argument("--write", type=Path, metavar="DIR",
                     help="also lay out the build context in DIR, ready for docker build")
    ck = sub.add_parser("check", help="test your own images and Dockerfiles as they are: one cell each, the "
                        "lineage of a series (Dockerfile.v*), what each install step changed")
    ck.add_argument("targets", nargs="+", metavar="TARGET", help="an image reference (test:v78) or a Dockerfile "
                    "(built with its own directory as the context)")
    ck.add_argument("--results", default="results/check", type=Path,
                    help="output directory (default: results/check); a ledger, as for run")
    ck.add_argument("--registry", type=Path, metavar="FILE",
                    help="the known-issue registry (default: registry/known-issues.yaml here, when there is one)")
    ck.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to every Dockerfile's build (repeatable)")
    ck.add_argument("--keep", action="store_true",
                    help="keep the images built from Dockerfiles (tagged --tag:ID; `compat-matrix clean` removes them)")
    ck.add_argument("--tag", default="compat-matrix-check", metavar="REPO",
                    help="a Dockerfile's image is tagged REPO:ID, so a later one of the series can build FROM it "
                         "(default: compat-matrix-check)")
    COMMANDS.update(registry_cli.add_commands(sub))
    sub.choices["preflight"].add_argument(
        "--built", action="store_true", help="also build the Dockerfile (and --baseline) and check the built images "
        "as `check` does: the fixes they carry, inherited through FROM too, and what each install step changed")
    COMMANDS["preflight"] = _and_built(COMMANDS["preflight"])
    return p


def _and_built(static: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """preflight, then with --built the same question put to the built images (check.preflight_built)."""

    def cmd_preflight(args: argparse.Namespace) -> int:
        code = static(args)
        if not args.built:
            return code
        from matrix import check

        print("\nThe built images:")
        result = check.preflight_built(args.dockerfile, args.baseline, check.Options(
            targets=(), registry=args.registry, build_args=check.build_args(args.build_arg or [])))
        print("\n".join(result.report[2:]).rstrip())
        for line in result.problems:
            _err(line)
        codes = (code, result.status)
        return next((c for c in (130, 143, EXIT_INFRA, EXIT_FAILED) if c in codes), EXIT_OK)

    return cmd_preflight


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
    s = pipeline.load_spec(args.config, args.as_of)
    plan = cells.plan(s)
    return s, plan, pipeline.select(_options(args), s, plan, lambda line: print(line, file=sys.stderr))


def cmd_list(args: argparse.Namespace) -> int:
    _, plan, chosen = _selected(args)
    for c in chosen:
        print(c.id)
    for ex in plan.excluded:
        print(f"excluded: {ex.cell.id} ({ex.reason})", file=sys.stderr)
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    s = pipeline.load_spec(args.config, args.as_of)
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

    from matrix.backends import dockerfile

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


def cmd_diff(args: argparse.Namespace) -> int:
    """Exit 1 when the second run regressed against the first (a cell that worked now fails)."""
    d = history.diff(history.load_run(args.a, args.results), history.load_run(args.b, args.results))
    print(history.format_diff(d), end="")
    return EXIT_FAILED if d.regressions else EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    """The caches go; every later run starts cold (downloads, prefix builds, every cell runs)."""
    from matrix.backends.docker import CACHE_RUN
    from matrix.backends.engine import DockerEngine, EngineFault

    if not args.engine_only:
        where = paths.cache_root()
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
    from matrix import fanout

    if args.github is not None:
        if args.github < 1:
            raise ConfigError("--github", "N", f"{args.github} shards", "give at least 1")
        print(json.dumps({"shard": [f"{k}/{args.github}" for k in range(1, args.github + 1)]}))
        return EXIT_OK
    f = fanout.Fanout(config=args.config, n=args.slurm if args.slurm is not None else args.k8s,
                      results=args.results, jobs=args.jobs, backend=args.backend, as_of=args.as_of,
                      run_args=tuple(args.run_args))
    if args.slurm is not None:
        fanout.fits(f, pipeline.load_spec(args.config, args.as_of), "--slurm")  # bad input here, not in N jobs
        if not args.submit:
            print(fanout.slurm_submit_script(f), end="")
            return EXIT_OK
        done = fanout.slurm_submit(f)
        print(f"submitted array job {done.array} ({f.n} shards) and merge job {done.merge} (afterany:{done.array})")
        print(f"scripts: {done.scripts[0]} {done.scripts[1]}; a shard K again: "
              f"sbatch --array=K-1 {done.scripts[0]}")
        return EXIT_OK
    docs, notes = fanout.k8s_manifests(f, pipeline.load_spec(args.config, args.as_of), fanout.matrix_text(args.config),
                                       install=args.install, parallelism=args.parallelism)
    print(fanout.k8s_yaml(docs, notes, f), end="")
    return EXIT_OK


def _print_regressions(changes: history.Diff | None) -> bool:
    """Print the regressions of a diff, if any; True when there were some."""
    if changes is None or not changes.regressions:
        return False
    print(f"{len(changes.regressions)} regression(s) since the last run:")
    print(history.format_diff(history.Diff(regressions=changes.regressions)), end="")
    return True


def _options(args: argparse.Namespace) -> pipeline.Options:
    """The run (or merge) the arguments ask for."""
    return pipeline.Options(
        config=args.config, results=args.results, select=tuple(args.select) if getattr(args, "select", None) else None,
        shard=getattr(args, "shard", None), keep=getattr(args, "keep", False), rerun=getattr(args, "rerun", False),
        resume=getattr(args, "resume", False), jobs=getattr(args, "jobs", None),
        backend=getattr(args, "backend", "auto"), registry=args.registry, fail_on_regression=args.fail_on_regression,
        write_known_good=args.write_known_good, as_of=args.as_of, allow_partial=getattr(args, "allow_partial", False))


def _report(result: pipeline.Result, *, merged: int | None = None) -> int:
    """Print what a run or a merge did; its status is the exit code."""
    if merged is not None:
        print(f"merged {len(result.ran)} cells from {merged} directories: {summary(result.ran)}")
    else:
        print(f"{len(result.ran)}/{result.total} cells: {summary(result.ran)}")
    if result.table or result.not_run:
        print(f"the table: {summary(result.table)}" + (f", {len(result.not_run)} not run" if result.not_run else ""))
    _print_regressions(result.changes)
    if result.unchanged:
        print("the table stands: every verdict is the one it holds")
    elif result.paths:
        print("wrote " + ", ".join(str(p) for p in result.paths))
    for line in result.problems:
        _err(line)
    return result.status


def cmd_run(args: argparse.Namespace) -> int:
    return _report(pipeline.run(_options(args)))


def cmd_merge(args: argparse.Namespace) -> int:
    """One table from shard runs: the shards of one matrix, every cell present (or --allow-partial)."""
    return _report(pipeline.merge(_options(args), args.dirs), merged=len(args.dirs))


def cmd_check(args: argparse.Namespace) -> int:
    """The user's own images as cells; exit codes as for run."""
    from matrix import check

    result = check.check(check.Options(
        targets=tuple(args.targets), results=args.results, registry=args.registry, keep=args.keep,
        build_args=check.build_args(args.build_arg), tag=check.repository(args.tag)))
    print(f"{len(result.records)} target(s): {summary(result.records)}")
    if len(result.report) > 2:
        print("\n".join(result.report[2:]).rstrip())
    for line in result.kept:
        print(f"kept {line}")
    if result.paths:
        print("wrote " + ", ".join(str(p) for p in result.paths))
    for line in result.problems:
        _err(line)
    return result.status


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "list": cmd_list, "reproduce": cmd_reproduce, "merge": cmd_merge, "shards": cmd_shards,
    "diff": cmd_diff, "clean": cmd_clean, "check": cmd_check}


class _ReaderGone:
    """Standard output whose reader may go away (`compat-matrix run | head`): the command goes on
    and ends as it would have, its output from then on discarded, with no traceback."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _gone(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def entry() -> int:
    """The process's command line (`compat-matrix`, `python -m matrix`): main(), then the objects it
    made are left out of the interpreter's last garbage collection, which walked every one of them
    on the way out (11 ms of a 0.11 s unchanged re-run); the process ends right after."""
    sys.stdout = _ReaderGone(sys.stdout)
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
