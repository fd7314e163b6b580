"""What a check is: the user's own images and Dockerfiles as cells (`compat-matrix check TARGET…`).

targets (image references, Dockerfiles) → built where a Dockerfile → per target its installed
distributions (importlib.metadata) and the probes run inside the image as it is (the sweep's
locked-down probe container) → one record per target into the results directory's ledger → the
table (records, CSV, Markdown, HTML, JUnit, JSON, as a sweep writes them), and `check.md`: the
lineage of the series (lineage.py) and what each install step of each Dockerfile changed.

The command line (cli.py) parses arguments into Options and prints the Result; nothing here reads
argv or exits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.utils import canonicalize_name

from matrix import history, locks, registry, sweep
from matrix.backends import imagecheck as ic
from matrix.backends.engine import DockerEngine, EngineFault
from matrix.errors import EXIT_FAILED, EXIT_INFRA, EXIT_INTERRUPTED, EXIT_OK, ConfigError, redact
from matrix.inputs import read_text
from matrix.ledger import TABLE_RECORDS, Ledger, read
from matrix.lineage import Checked, StepDrift, drift, format_drift, format_lineage, lineage, natural_key, target_id
from matrix.paths import atomic_write
from matrix.registry import Registry
from matrix.registry.cliargs import build_args as build_args  # --build-arg, as preflight reads it
from matrix.store import Lines, Outcome, Record

Echo = Callable[[str], None]
EXIT_TERMINATED = 143  # SIGTERM, as for run
# The packages the probe library knows how to probe (probes/imports.py) besides the registry's.
PROBED = ("numpy", "scipy", "torch")
# An image reference: what `docker` takes, and nothing a shell would read.
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


@dataclass(frozen=True)
class Options:
    targets: tuple[str, ...]
    results: Path = Path("results/check")
    registry: Path | None = None
    keep: bool = False
    build_args: tuple[tuple[str, str], ...] = ()
    # A Dockerfile's image is tagged REPO:<its id> (a later Dockerfile of the series can build FROM it).
    tag: str = "compat-matrix-check"
    memory: str = "4g"
    timeout_s: float = 300.0


@dataclass(frozen=True)
class Target:
    text: str
    id: str
    dockerfile: Path | None  # None: an image reference
    source: str = ""  # the Dockerfile's text, read before anything runs


@dataclass
class Result:
    status: int = EXIT_OK
    run_id: str = ""
    records: list[Record] = field(default_factory=list)
    report: list[str] = field(default_factory=list)  # check.md's lines: lineage and drift
    paths: list[Path] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def targets(texts: tuple[str, ...]) -> list[Target]:
    """The targets in natural version order (a series builds its FROM images first). A path that
    exists is a Dockerfile; anything else must read as an image reference."""
    out: list[Target] = []
    for text in texts:
        path = Path(text)
        if path.is_dir() and (path / "Dockerfile").is_file():
            path = path / "Dockerfile"
        if path.is_file():
            source = read_text(path, "Dockerfile", "give a Dockerfile's path or an image reference")
            out.append(Target(text, target_id(str(path), is_dockerfile=True), path, source))
        elif text.startswith((".", "/", "~")) or "dockerfile" in text.lower():
            raise ConfigError(text, "TARGET", "no such Dockerfile", "give a Dockerfile's path or an image reference")
        elif not _IMAGE.match(text):
            raise ConfigError(text, "TARGET", "is neither a file nor an image reference",
                              "give a Dockerfile's path or an image reference such as test:v78")
        else:
            out.append(Target(text, target_id(text, is_dockerfile=False), None))
    seen: dict[str, str] = {}
    for t in out:
        if t.id in seen:
            raise ConfigError(t.text, "TARGET", f"has the same id ({t.id}) as {seen[t.id]}",
                              "check them in separate --results directories, or rename one")
        seen[t.id] = t.text
    return sorted(out, key=lambda t: natural_key(t.id))


# A repository name for the built images' tags (Docker's grammar, lower case).
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def repository(text: str) -> str:
    """--tag: a repository name the built images are tagged in (REPO:ID)."""
    if len(text) > 200 or not _REPO.match(text):
        raise ConfigError(text, "--tag", "is not a repository name (lower-case letters, digits, . _ - and /)",
                          "e.g. --tag team/app-check")
    return text


def load_registry(given: Path | None) -> Registry | None:
    """--registry, or registry/known-issues.yaml here when there is one."""
    if given is not None:
        return registry.load(given)
    default = Path(registry.DEFAULT_PATH)
    return registry.load(default) if default.is_file() else None


def _installs(text: str) -> bool:
    """Whether a RUN instruction runs pip / uv pip install or uninstall."""
    from matrix.registry import pipcmd

    body = text.split(None, 1)[1] if " " in text else ""
    try:
        return bool(pipcmd.parse_shell(body))
    except ValueError:
        return bool(re.search(r"\bpip3?\b.*\b(install|uninstall)\b", body))


def _short(command: str) -> str:
    text = " ".join(command.split(None, 1)[1].split()) if " " in command else command
    return text if len(text) <= 120 else text[:117] + "..."


def _installed(inv: ic.Inventory) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {n: (d.version, d.requires) for n, d in inv.dists.items()}


def check(options: Options, echo: Echo = print) -> Result:
    """Check every target; write the records, the table and check.md. Raises CompatMatrixError for
    bad input and an unreachable engine."""
    return _check(targets(options.targets), options, echo)


def preflight_built(dockerfile: Path, baseline: Path | None, options: Options, echo: Echo = print) -> Result:
    """`preflight --built`: the Dockerfile (and its baseline, the last working version) built and
    checked as `check` does, into a scratch results directory; the lineage says whether the built
    image carries the baseline's fixes (inherited through FROM too) and each install step's drift
    explains what changed. Status: 1 when the image fails or lost a fix the baseline carried, 3 for
    infra, else 0."""
    import tempfile

    chosen = []
    for path, role in [(baseline, "baseline"), (dockerfile, "target")]:
        if path is not None:
            found = targets((str(path),))[0]
            # Ids that sort the baseline first (b < t) whatever the files are called.
            chosen.append(Target(found.text, f"{role}-{found.id}", found.dockerfile, found.source))
    with tempfile.TemporaryDirectory(prefix="compat-matrix-preflight-") as tmp:
        out = _check(chosen, replace(options, results=Path(tmp)), echo)
    out.paths = []
    if out.status != EXIT_OK:
        return out
    mine = out.records[-1]
    lost = [ln for ln in out.report if ln.startswith(f"- {chosen[-1].id}: fix not carried forward")]
    if mine.outcome.is_incompatibility or lost:
        out.status = EXIT_FAILED
    return out


def _check(chosen: list[Target], options: Options, echo: Echo) -> Result:
    if not chosen:
        raise ConfigError("check", "TARGET", "no target given", "give image references or Dockerfiles")
    known = load_registry(options.registry)
    issue_probes = tuple((i.name, i.probe) for i in known.issues if i.probe) if known else ()
    wanted: set[str] = {canonicalize_name(n) for n in PROBED} | (
        {canonicalize_name(n) for i in known.issues for n, _ in i.requires} if known else set())
    out = Result(run_id=sweep.new_run_id())
    engine = DockerEngine()  # EngineUnavailable: exit 3, nothing written
    echo(f"compat-matrix check {out.run_id}: docker backend on {engine.description}")
    labels = ic.check_labels(out.run_id)
    results = options.results
    results_lock = locks.hold_results(results)
    series: list[Checked] = []
    interrupted: int | None = None
    steps_by: dict[str, list[StepDrift]] = {}
    try:
        ledger = Ledger.load(results)
        previous_path = results / TABLE_RECORDS
        previous = read(previous_path, "records") if previous_path.is_file() else None
        try:
            with sweep.sigterm_raises():
                for t in chosen:
                    started = time.monotonic()
                    log_dir = results / "logs" / t.id
                    log_dir.mkdir(parents=True, exist_ok=True)
                    record = Record(cell=t.id, base=t.dockerfile.name if t.dockerfile else t.text,
                                    mode="dockerfile" if t.dockerfile else "image", pins={},
                                    outcome=Outcome.INFRA_ERROR, backend="docker", run_id=out.run_id,
                                    engine=engine.description)
                    checked = Checked(t.id, Outcome.INFRA_ERROR, {})
                    try:
                        _one(engine, t, options, labels, issue_probes, wanted, record, checked, log_dir, out)
                    except EngineFault as e:
                        record.outcome, record.error = Outcome.INFRA_ERROR, redact(str(e))
                    record.duration_s = round(time.monotonic() - started, 2)
                    checked.outcome = record.outcome
                    series.append(checked)
                    steps_by[t.id] = checked.steps
                    out.records.append(record)
                    echo(f"{t.id}: {record.outcome.value}" + (f": {record.error}" if record.error else ""))
        except KeyboardInterrupt:
            interrupted = EXIT_INTERRUPTED
        except sweep.Terminated:
            interrupted = EXIT_TERMINATED
        old = dict(ledger.records)
        ledger.update(out.records)
        out.report = [f"# compat-matrix check {out.run_id}", ""]
        out.report += format_lineage(lineage(series, known.issues if known else ())) if len(series) > 1 else []
        out.report += format_drift(steps_by)
        out.paths = _write(ledger, known, out, previous, old)
    finally:
        try:
            # An interrupted build goes on in the daemon for a moment: wait it out.
            engine.remove_labelled(out.run_id, settle_s=8.0 if interrupted else 0.0)
        except EngineFault as e:
            out.problems.append(f"cleanup of check {out.run_id} failed: {e}")
        engine.close()
        results_lock.release(remove=False)
    if interrupted is not None:
        out.problems.append(f"interrupted after {len(out.records)} of {len(chosen)} targets; the ledger keeps "
                            "those and every earlier verdict")
        out.status = interrupted
        return out
    infra = [r for r in out.records if r.outcome is Outcome.INFRA_ERROR]
    if infra:
        out.problems.append(f"{len(infra)} target(s) ended in infra-error (no verdict); see their logs")
        out.status = EXIT_INFRA
    return out


def _one(engine: DockerEngine, t: Target, options: Options, labels: dict[str, str],
         issue_probes: tuple[tuple[str, str], ...], wanted: set[str], record: Record, checked: Checked,
         log_dir: Path, out: Result) -> None:
    """One target: built (a Dockerfile), inventoried, probed; its record and lineage data filled in."""
    name = t.text
    if t.dockerfile is not None:
        tag = f"{options.tag}:{t.id}"
        build_labels = ic.check_labels(out.run_id, keep=options.keep)
        built = ic.build(engine, t.dockerfile, t.source, tag, build_labels, dict(options.build_args))
        (log_dir / "build.log").write_text(redact(built.log), encoding="utf-8")
        if not built.ok:
            v = ic.build_failure(built, t.dockerfile)
            record.outcome, record.error = v.outcome, v.error
            return
        if options.keep:
            out.kept.append(f"{t.id}: {tag} (labelled org.compat-matrix.run=cache: `compat-matrix clean` removes it)")
        image, name = tag, f"{t.text} (built as {tag})"
        record.base_id = built.image
        _drift(engine, built, labels, options, checked, name)
    else:
        missing = engine.ensure_image(t.text)
        if missing:
            record.outcome, record.error = Outcome.INFRA_ERROR, missing
            return
        image = t.text
        record.base_id = engine.image_id(image) or ""
    try:
        inv = ic.inventory(engine, image, name, labels, options.memory)
    except ic.NoPython as e:
        record.outcome, record.error = Outcome.BUILD_ERROR, str(e)
        return
    checked.versions = inv.versions()
    pins = {n: d.version for n, d in inv.dists.items() if canonicalize_name(n) in wanted}
    record.pins, record.python = pins, inv.python
    probe_tag = f"compat-matrix-check-probes:{out.run_id.lower()}-{t.id.lower()}"[:128]
    made = ic.probe_image(engine, image, probe_tag, labels)
    if not made.ok:
        record.outcome, record.error = Outcome.INFRA_ERROR, f"the probe image of {name} did not build: {made.error}"
        return
    report, verdict = ic.run_probes(engine, probe_tag, inv.executable, pins, labels=labels, issue_probes=issue_probes,
                                    memory=options.memory, timeout_s=options.timeout_s, log_dir=log_dir)
    record.installed = dict(report.installed) or dict(pins)
    record.outcome, record.error = verdict.outcome, verdict.error


def _drift(engine: DockerEngine, built: ic.Built, labels: dict[str, str], options: Options,
           checked: Checked, name: str) -> None:
    """The inventory after the final stage's FROM and after each of its installing RUN steps."""
    layers = list(built.layers)
    froms = [i for i, (ins, _) in enumerate(layers) if ins.keyword == "FROM"]
    if not froms:
        return
    start = froms[-1]
    from_ins, from_image = layers[start]
    checked.from_line = from_ins.line
    checked.from_image = from_ins.text.split()[1] if len(from_ins.text.split()) > 1 else from_image
    seen: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {}

    def installed(image: str, what: str) -> dict[str, tuple[str, tuple[str, ...]]]:
        if image not in seen:
            try:
                seen[image] = _installed(ic.inventory(engine, image, what, labels, options.memory))
            except ic.NoPython:
                seen[image] = {}
        return seen[image]

    # Each installing step against the image right before it: what that step, and only it, changed.
    for (prev, prev_image), (ins, image) in zip(layers[start:], layers[start + 1:], strict=False):
        if ins.keyword != "RUN" or not _installs(ins.text):
            continue
        before = installed(prev_image, f"{name} after line {prev.line}")
        after = installed(image, f"{name} after line {ins.line}")
        checked.steps.append(StepDrift(ins.line, _short(ins.text), tuple(drift(before, after))))


def _write(ledger: Ledger, known: Registry | None, out: Result, previous: list[Record] | None,
           old: dict[str, Record]) -> list[Path]:
    """The ledger, then the table of every record it holds, the run's history entry and check.md."""
    from matrix import report

    lines = Lines()  # each record encoded once for the ledger, the history entry and records.jsonl
    paths = [ledger.save(lines)]
    table = [ledger.records[k] for k in sorted(ledger.records, key=natural_key)]
    # Before the table's files, whose first, records.jsonl, is the last to need the lines.
    kept = history.keep(table, ledger.results, out.run_id, lines)
    before = {r.cell: r for r in previous or []}
    for r in table:
        if r.cell not in before and r.cell in old:
            before[r.cell] = old[r.cell]
    changes = history.diff(list(before.values()), table) if before else None
    annotations = registry.annotate(known, table) if known is not None else None
    about = [f"Checked images and Dockerfiles (`compat-matrix check`): {len(table)} target(s); "
             "lineage and per-step drift in check.md."]
    paths += report.write(table, ledger.results, (), annotations,
                          history.format_diff(changes, markdown=True) if changes else None, about=about,
                          lines=lines)
    paths.append(kept)
    md = ledger.results / "check.md"
    atomic_write(md, "\n".join(out.report) + "\n")
    paths.append(md)
    return paths
