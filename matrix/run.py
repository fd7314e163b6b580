"""What a run is, and what a merge is: the pipeline from a matrix file to an updated ledger and table.

load the matrix → plan and select the cells → run them (sweep) → take their records into the
results directory's ledger (ledger.py) → derive the table, history and known-good pins from it.
The command line (cli.py) parses arguments into Options, prints what it is given back, and ends
with the status; nothing here reads argv or calls sys.exit, so a run can be driven from a test.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from matrix import cells, collector, fanout, history, index, locks, registry, resultcache, spec, sweep
from matrix.errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, ConfigError, EngineUnavailable, ResultsUnwritable
from matrix.ledger import TABLE_RECORDS, Ledger, matrix_digest, read
from matrix.registry import Registry, bounds
from matrix.store import Lines, Outcome, Record

Echo = Callable[[str], None]

# What report.write() writes: all of them present and the records unchanged, nothing is rewritten.
TABLE_FILES = ("records.jsonl", "matrix.csv", "matrix.md", "matrix.html", "junit.xml", "matrix.json")
# matrix.md's first line names the matrix its table is of (an HTML comment: invisible when rendered).
_STAMP = "<!-- compat-matrix table of matrix {digest} -->"


@dataclass(frozen=True)
class Options:
    """A run as the command line (or a test) asks for it."""

    config: Path = Path("matrix.yaml")
    results: Path = Path("results")
    select: tuple[str, ...] | None = None
    shard: str | None = None
    keep: bool = False
    rerun: bool = False
    resume: bool = False
    jobs: int | None = None
    backend: str = "auto"
    registry: Path | None = None
    fail_on_regression: bool = False
    # Refresh the registry's known-good pins from this results directory even when it is not the
    # default one beside the matrix file.
    write_known_good: bool = False
    as_of: dt.date | None = None
    # merge only: write a table with cells missing (each missing cell shows as not run).
    allow_partial: bool = False


@dataclass
class Result:
    """What a run or a merge did, for the command line to print; `status` is its exit code."""

    status: int = EXIT_OK
    run_id: str = ""
    # This run's records (run or read from the result cache), and the table after it.
    ran: list[Record] = field(default_factory=list)
    table: list[Record] = field(default_factory=list)
    not_run: list[cells.Cell] = field(default_factory=list)
    total: int = 0
    changes: history.Diff | None = None
    paths: list[Path] = field(default_factory=list)
    # The table and everything derived from it stood as they were (an unchanged re-run).
    unchanged: bool = False
    # Lines for the error stream: why the status is not 0.
    problems: list[str] = field(default_factory=list)


def load_spec(config: Path, as_of: dt.date | None) -> spec.Spec:
    """The matrix file, its specifier axes filled from the index (as of `as_of`, if given)."""
    return index.expand(spec.load(config), as_of)


def load_registry(config: Path, given: Path | None) -> Registry | None:
    """The registry failures are matched against: given, or the one beside the matrix file."""
    if given is not None:
        return registry.load(given)
    default = config.parent / registry.DEFAULT_PATH
    return registry.load(default) if default.is_file() else None


def select(options: Options, s: spec.Spec, plan: cells.Plan, echo: Echo) -> tuple[cells.Cell, ...]:
    """The cells the options ask for: --select patterns, then --shard."""
    chosen = cells.select(plan.cells, list(options.select) if options.select else None)
    if options.shard:
        part = fanout.shard_of(options.shard, os.environ, str(options.config))
        if part.source:
            echo(f"shard {part} from the {part.source}")
        chosen = cells.shard(chosen, part.k, part.n)
        if not chosen:  # a small matrix over many shards: this shard has nothing to do
            echo(f"shard {options.shard} holds no cell of this matrix")
    if not chosen and not options.shard:
        hint = f" (e.g. {plan.cells[0].id})" if plan.cells else ""
        raise ConfigError(str(options.config), "--select", f"{list(options.select or [])} matches no cell",
                          f"run `compat-matrix list --config {options.config}` for the ids{hint}")
    return chosen


def fanned(options: Options, echo: Echo) -> Options:
    """--shard auto read from the engine that started this process (once, said in one line), and
    the {index}/{count} of --results filled in: each shard its own results directory."""
    part = fanout.shard_of(options.shard, os.environ, str(options.config)) if options.shard else None
    if part is not None and part.source:
        echo(f"shard {part} from the {part.source}")
    return replace(options, shard=str(part) if part else None,
                   results=fanout.expand_results(options.results, part, str(options.config)))


def feeds_known_good(options: Options, known: Registry | None) -> bool:
    """known-good.yaml is written only from the results directory it belongs to: results/ beside the
    matrix file, or the one a run names with --write-known-good."""
    if known is None:
        return False
    if options.write_known_good:
        return True
    try:
        return options.results.resolve() == (options.config.parent / "results").resolve()
    except OSError:
        return False


def make_backend(choice: str, s: spec.Spec, run_id: str, keep: bool,
                 issue_probes: tuple[tuple[str, str], ...]) -> tuple[sweep.Backend, str]:
    """The backend to run, and a line saying which one and why."""
    from matrix.backends.venv import VenvBackend

    def venv() -> VenvBackend:
        return VenvBackend(s, run_id, keep=keep, issue_probes=issue_probes)

    if choice in ("docker", "auto"):
        from matrix.backends.docker import DockerBackend
        from matrix.backends.engine import DockerEngine

        try:
            engine = DockerEngine()
        except EngineUnavailable as e:
            if choice == "docker":
                raise
            return venv(), f"{e}: running the embedded venv backend instead"
        backend = DockerBackend(engine, s, run_id, keep=keep, issue_probes=issue_probes)
        return backend, f"docker backend on {engine.description}"
    return venv(), "venv backend (--backend venv)"


def _kept_verdicts(ledger: Ledger, cells_: tuple[cells.Cell, ...], base_ids: dict[str, str]) -> dict[str, Record]:
    """For --resume: the ledger's verdicts on these cells (an infra-error is no verdict), while their
    base is still what it was (a moved base image or interpreter runs them again)."""
    out = {}
    for c in cells_:
        r = ledger.get(c.id)
        if r is not None and r.outcome is not Outcome.INFRA_ERROR and r.base_id == base_ids.get(r.base, ""):
            out[c.id] = r
    return out


def _load_report() -> None:
    """Import the table writer (pandas: half a second; the heatmap's Styler: 0.1 s more) while the
    cells run, not after them."""
    from matrix import exports, report  # noqa: F401 - imported for later

    exports.preload()


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


def _plain(records: list[Record]) -> list[dict[str, object]]:
    return [dict(r.serialize(), cached=False) for r in records]


def _previous_table(results: Path) -> list[Record] | None:
    """The records of the table this run replaces, for "changed since the last run"."""
    path = results / TABLE_RECORDS
    return read(path, "records") if path.is_file() else None


def _table_current(results: Path, known: Registry | None, digest: str, known_good: bool) -> bool:
    """Every file of the table is there, of this matrix, written after the registry it names
    issues from was (and the known-good pins it feeds are there)."""
    if not all((results / f).is_file() for f in TABLE_FILES):
        return False
    try:
        with open(results / "matrix.md", encoding="utf-8") as f:
            head = [f.readline().rstrip("\n") for _ in range(3)]
        if _STAMP.format(digest=digest) not in head:  # the title, a blank line, the stamp
            return False
        if known is None or known.path is None:
            return True
        from matrix.registry import knowngood

        written = (results / TABLE_RECORDS).stat().st_mtime
        return known.path.stat().st_mtime < written and (not known_good or knowngood.default_path(known).is_file())
    except (OSError, UnicodeDecodeError):
        return False


def _before(previous: list[Record] | None, old: dict[str, Record], table: list[Record]) -> list[Record] | None:
    """What the new table is compared with, cell by cell: the table it replaces, and for its cells
    that table did not show, their verdicts in the ledger before this run (a partial run, a matrix
    that gained a cell back)."""
    if previous is None and not old:
        return None
    before = {r.cell: r for r in previous or []}
    for r in table:
        if r.cell not in before and r.cell in old:
            before[r.cell] = old[r.cell]
    return list(before.values())


def write_table(ledger: Ledger, plan: cells.Plan, s: spec.Spec, known: Registry | None, *, run_id: str,
                previous: list[Record] | None, old: dict[str, Record], known_good: bool,
                force: bool = False, notes: list[str] | None = None) -> tuple[list[Path], history.Diff | None, bool]:
    """Save the ledger, then derive the table (ledger ∩ matrix, compared with the one it replaces),
    the run's history entry and, where this directory feeds them, the known-good pins. Returns the
    paths written, the changes, and whether everything stood unchanged."""
    try:
        with collector.paused():
            return _write_table(ledger, plan, s, known, run_id=run_id, previous=previous, old=old,
                                known_good=known_good, force=force, notes=notes)
    except OSError as e:
        raise ResultsUnwritable(f"writing the results in {ledger.results} failed ({e}); its ledger is whole (the "
                                "one before or the one after), and a run once the fault is mended writes the "
                                "table again") from None


def _write_table(ledger: Ledger, plan: cells.Plan, s: spec.Spec, known: Registry | None, *, run_id: str,
                 previous: list[Record] | None, old: dict[str, Record], known_good: bool,
                 force: bool, notes: list[str] | None) -> tuple[list[Path], history.Diff | None, bool]:
    results = ledger.results
    digest = matrix_digest(s)
    table, not_run = ledger.table(plan.cells)
    before = _before(previous, old, table)
    changes = history.diff(before, table) if before is not None else None
    if (not force and previous is not None and _plain(previous) == _plain(table)
            and _table_current(results, known, digest, known_good)):
        return [], changes, True  # an unchanged re-run: the ledger, the table and the pins stand
    lines = Lines()  # each record encoded once for the ledger, the history entry and records.jsonl
    paths = [ledger.save(lines)]
    # Before the table's files, whose first, records.jsonl, is the last to need the lines.
    kept = history.keep(table, results, run_id, lines)
    # Here, not at the top: pandas takes half a second to import, and an unchanged re-run needs none of it.
    from matrix import report

    about = [_STAMP.format(digest=digest),
             f"Verdicts of matrix `{digest}`" + (f" as of {s.as_of}" if s.as_of else "")
             + f": {len(table)} of {len(plan.cells)} cells"
             + (f", {len(not_run)} not run yet (`compat-matrix run --resume` runs them)" if not_run else "")
             + ". Each verdict is the latest its cell got; the records name the run that made it.",
             *(notes or [])]
    annotations = registry.annotate(known, table) if known is not None else None
    # With override cells in the matrix, the bounds audit goes into matrix.md too.
    audited = bounds.markdown(bounds.audit(table)) if "override" in s.modes or any(
        r.mode == "override" for r in table) else ""
    paths += report.write(table, results, s.package_names, annotations,
                          history.format_diff(changes, markdown=True) if changes else None,
                          not_run=not_run, about=about, sections=[audited] if audited else None, lines=lines)
    paths.append(kept)
    if known is not None and known_good:
        from matrix.registry import knowngood

        paths.append(knowngood.write(table, known, packages=s.package_names))
    return paths, changes, False


def _stamp(records: list[Record], s: spec.Spec) -> None:
    """Provenance every record of a run carries: the matrix it was planned from, the as-of day."""
    digest = matrix_digest(s)
    as_of = s.as_of
    for r in records:
        r.matrix = digest
        r.as_of = as_of.isoformat() if as_of else ""


def run(options: Options, echo: Echo = print) -> Result:
    """One run: the selected cells through a backend, their records into the ledger, the table
    derived from it. Raises CompatMatrixError for bad input and an unreachable engine."""
    options = fanned(options, echo)
    s = load_spec(options.config, options.as_of)
    plan = cells.plan(s)
    chosen = select(options, s, plan, echo)
    known = load_registry(options.config, options.registry)
    # A pin that is no release is bad input (a typo would read as a missing wheel), before anything runs.
    for note in index.check_releases(s):
        echo(note)
    known_good = feeds_known_good(options, known)
    out = Result(run_id=sweep.new_run_id())
    if not chosen:  # an empty shard: the table as the ledger has it, under the directory's lock
        return _table_only(options, s, plan, known, known_good, out)
    issue_probes = tuple((i.name, i.probe) for i in known.issues if i.probe) if known else ()
    # Before anything is written: no engine (with --backend docker), no change to results/.
    backend, why = make_backend(options.backend, s, out.run_id, options.keep, issue_probes)
    echo(f"compat-matrix run {out.run_id}: {why}")
    skipped = {b.name: backend.skip_reason(b) for b in s.bases}
    for reason in sorted({r for r in skipped.values() if r}):
        echo(f"skipped: {reason}")
    runnable = tuple(c for c in chosen if not skipped[c.base])
    skipped_cells = [c for c in chosen if skipped[c.base]]
    results = options.results
    try:
        results_lock = locks.hold_results(results)
        try:
            ledger = Ledger.load(results)
            previous = _previous_table(results)
            kept = _kept_verdicts(ledger, runnable, {b.name: backend.base_id(b) for b in s.bases
                                                    if not skipped[b.name]}) if options.resume else {}
        except BaseException:
            results_lock.release(remove=False)
            raise
    except BaseException:
        backend.close(interrupted=False)
        raise
    runnable = tuple(c for c in runnable if c.id not in kept)
    if not runnable and not kept:
        results_lock.release(remove=False)
        backend.close(interrupted=False)
        raise ConfigError(str(options.config), "bases", f"none of the {len(chosen)} selected cells can run on "
                          f"the {backend.name} backend", "see the skipped lines above")
    run_lock = locks.hold_run(out.run_id)
    outcome: sweep.SweepResult | None = None
    closed: Callable[[], None] | None = None
    try:
        for note in backend.start():
            echo(note)
        echo(f"{len(runnable)} cells to run" + (f", {len(kept)} kept from the last run" if kept else "")
             + (f", {len(plan.excluded)} excluded" if plan.excluded else "")
             + (f", {len(skipped_cells)} skipped" if skipped_cells else ""))
        with sweep.sigterm_raises():
            cache = resultcache.ResultCache(s, backend.name, issue_probes)
            outcome = sweep.sweep(runnable, backend, results, out.run_id, echo=echo,
                                  jobs=options.jobs or sweep.default_jobs(backend.name), cache=cache,
                                  rerun=options.rerun or options.keep, meanwhile=_load_report)
        if outcome.interrupted is None:
            closed = _close_meanwhile(backend)  # the engine's clean-up while the table is written
        _stamp(outcome.records, s)
        old = dict(ledger.records)
        ledger.update(outcome.records)
        out.paths, out.changes, out.unchanged = write_table(
            ledger, plan, s, known, run_id=out.run_id, previous=previous, old=old, known_good=known_good)
    finally:
        try:
            if closed is None:
                backend.close(interrupted=outcome is None or outcome.interrupted is not None)
            else:
                closed()
        except Exception as e:  # noqa: BLE001 - a failed cleanup must not hide the results
            out.problems.append(f"cleanup of run {out.run_id} failed: {e}")
        run_lock.release()
        results_lock.release(remove=False)
    out.ran, out.total = outcome.records, outcome.total
    out.table, out.not_run = ledger.table(plan.cells)
    out.status = _status(options, out, outcome, runnable)
    return out


def _status(options: Options, out: Result, outcome: sweep.SweepResult, runnable: tuple[cells.Cell, ...]) -> int:
    """The exit code of a finished sweep: interrupted, stopped, records missing, regressions, infra."""
    if outcome.interrupted is not None:
        out.problems.append(f"interrupted after {len(outcome.records)} of {outcome.total} cells; the ledger "
                            "keeps those and every earlier verdict. `--resume` runs the rest")
        return outcome.interrupted
    if outcome.stopped:
        out.problems.append(f"{outcome.stopped}; mend that, then `--resume` runs the rest")
        return EXIT_INFRA
    got = {r.cell for r in outcome.records}
    missing = [c.id for c in runnable if c.id not in got]
    if missing:
        out.problems.append(f"{len(missing)} cell(s) ended without a record (a fault of the tool): "
                            + ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
                            + "; `--resume` runs them")
        return EXIT_INFRA
    if out.changes is not None and out.changes.regressions and options.fail_on_regression:
        return EXIT_FAILED
    infra = [r for r in outcome.records if r.outcome is Outcome.INFRA_ERROR]
    if infra:
        out.problems.append(f"{len(infra)} cell(s) ended in infra-error (no verdict); see their logs, then "
                            "`--resume` runs just those")
        return EXIT_INFRA
    return EXIT_OK


def _table_only(options: Options, s: spec.Spec, plan: cells.Plan, known: Registry | None, known_good: bool,
                out: Result) -> Result:
    """A run with no cell to run (an empty shard): the table the ledger gives, written under the lock."""
    results_lock = locks.hold_results(options.results)
    try:
        ledger = Ledger.load(options.results)
        previous = _previous_table(options.results)
        out.paths, out.changes, out.unchanged = write_table(
            ledger, plan, s, known, run_id=out.run_id, previous=previous, old=dict(ledger.records),
            known_good=known_good)
    finally:
        results_lock.release(remove=False)
    out.table, out.not_run = ledger.table(plan.cells)
    return out


def merge(options: Options, dirs: list[Path], echo: Echo = print) -> Result:
    """One table from the results of shard runs: every shard of the same matrix, every cell present
    (or --allow-partial), taken into the ledger of `options.results` as a run's records are."""
    with collector.paused():  # the shards' records, the ledger and the table: no cycles among them
        return _merge(options, dirs)


def _merge(options: Options, dirs: list[Path]) -> Result:
    s = load_spec(options.config, options.as_of)
    plan = cells.plan(s)
    known = load_registry(options.config, options.registry)
    digest = matrix_digest(s)
    in_plan = {c.id for c in plan.cells}
    merged: dict[str, Record] = {}
    foreign: list[str] = []
    # A directory without records is a shard that has not run (yet), on a cluster an array task
    # cancelled or never started: its cells are missing (exit 3, listed), as a shard that died.
    empty: list[str] = []
    for d in dirs:
        ledger = Ledger.load(d)
        if not ledger.records:
            empty.append(str(d))
            continue
        digests = sorted({r.matrix for r in ledger.records.values() if r.cell in in_plan and r.matrix} - {digest})
        if digests or not any(r.cell in in_plan for r in ledger.records.values()):
            foreign.append(f"{d} (matrix {', '.join(digests) or 'with none of these cells'})")
        for r in ledger.records.values():
            if r.cell in in_plan and (r.cell not in merged or _newer(r, merged[r.cell])):
                merged[r.cell] = r
    if len(empty) == len(dirs):
        raise ConfigError(", ".join(empty), "DIR", "no records in any of these directories",
                          "pass the --results directories of the shard runs")
    if foreign:
        raise ConfigError(", ".join(foreign), "DIR", f"these results are of another matrix than {options.config} "
                          f"(matrix {digest})", "merge the shards of one matrix, with the --config (and --as-of) "
                          "they were run with")
    missing = [c.id for c in plan.cells if c.id not in merged]
    out = Result(run_id=sweep.new_run_id(), ran=list(merged.values()), total=len(plan.cells))
    notes = []
    if missing:
        listed = "\n  ".join(missing)
        if not options.allow_partial:
            out.problems.append(f"{len(missing)} of {len(plan.cells)} cells have no record in these directories "
                                f"(a shard not given, or one that died):\n  {listed}\n"
                                + (f"no records in {', '.join(empty)} (a shard that did not run?)\n" if empty else "")
                                + "nothing was written; give every shard's directory, run the missing shards, or "
                                "pass --allow-partial")
            out.status = EXIT_INFRA
            return out
        notes.append(f"**Partial merge**: {len(missing)} of {len(plan.cells)} cells had no record in the merged "
                     "directories and show as not run.")
    results_lock = locks.hold_results(options.results)
    try:
        ledger = Ledger.load(options.results)
        previous = _previous_table(options.results)
        old = dict(ledger.records)
        ledger.update(sorted(merged.values(), key=lambda r: r.run_id))
        out.paths, out.changes, out.unchanged = write_table(
            ledger, plan, s, known, run_id=out.run_id, previous=previous, old=old,
            known_good=feeds_known_good(options, known), force=True, notes=notes)
    finally:
        results_lock.release(remove=False)
    out.table, out.not_run = ledger.table(plan.cells)
    if missing:
        out.problems.append(f"partial merge: {len(missing)} cell(s) missing, shown as not run")
    if out.changes is not None and out.changes.regressions and options.fail_on_regression:
        out.status = EXIT_FAILED
    elif any(r.outcome is Outcome.INFRA_ERROR for r in out.table):
        out.problems.append("some cells ended in infra-error (no verdict); run those shards again with --resume")
        out.status = EXIT_INFRA
    return out


def _newer(a: Record, b: Record) -> bool:
    """Whether record a is a newer verdict than b (run ids sort by time); a verdict beats an infra-error."""
    if (a.outcome is Outcome.INFRA_ERROR) != (b.outcome is Outcome.INFRA_ERROR):
        return b.outcome is Outcome.INFRA_ERROR
    return a.run_id > b.run_id
