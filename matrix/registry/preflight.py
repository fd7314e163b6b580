"""Preflight: the seed's pre-build-check, automated. Checks a Dockerfile against results and registry.

Errors (exit 1):
- the pins the file ends with, installed the way it installs them (together / layered), failed in
  the results on its base: the failure, the known issue it hit and the issue's fix;
- a registry `requires` pin (the tested fix) missing or different while the issue's other
  packages are installed;
- a fix the `--baseline` Dockerfile (the last working version) carried that this file drops or
  changes: the seed's meta-pattern, "fix not carried forward".
An error about a fix is waived (shown as a note) when the results show the file's own pins passing
on its base: evidence beats the folklore.

Warnings (exit 0 unless strict): combinations never tested (with the matrix.yaml lines and the
`compat-matrix run --select` that would test them), pins only partly given, installs after the pins
that may replace them, variables the reader could not resolve.

Unreadable input (a missing Dockerfile or requirements file) is a ConfigError naming the file:
exit 2. Every message names its Dockerfile line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from matrix.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, ConfigError
from matrix.registry import Registry, collapse, dockerparse, evidence
from matrix.registry.dockerparse import Dockerfile, Effective
from matrix.store import Outcome, Record

ERROR, WARNING, NOTE = "error", "warning", "note"


@dataclass(frozen=True)
class Finding:
    level: str
    file: str
    line: int | None
    message: str
    fix: str = ""

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.level}: {self.message}"
        if self.fix:
            text += "\n" + "\n".join(f"  {'fix: ' if i == 0 else '     '}{ln}"
                                     for i, ln in enumerate(self.fix.splitlines()))
        return text


@dataclass(frozen=True)
class Report:
    dockerfile: str
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == WARNING)

    def exit_code(self, strict: bool = False) -> int:
        if self.errors or (strict and self.warnings):
            return EXIT_FAILED
        return EXIT_OK

    def format(self) -> str:
        lines = [f.format() for f in self.findings]
        e, w = len(self.errors), len(self.warnings)
        verdict = "problems found" if e else "clean" if not w else "no errors"
        lines.append(f"preflight {self.dockerfile}: {e} error(s), {w} warning(s): {verdict}")
        return "\n".join(lines) + "\n"


def normalise_image(ref: str) -> str:
    """docker.io/library/python:3.11 and python:3.11 are the same image; no tag means latest."""
    ref = ref.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
    if ref.startswith("library/"):
        ref = ref[len("library/"):]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        ref += ":latest"
    return ref


def _pins_text(pins: dict[str, str]) -> str:
    return " + ".join(f"{n} {v}" for n, v in pins.items())


def _how(eff: Effective, names: list[str], mode: str | None) -> str:
    """How the file installs the pins: 'together (line 18)' or 'layered: scipy (line 6), then numpy (line 9)'."""
    entries = eff.order(names)
    if mode == "together":
        return f"together ({entries[0].req.where()})"
    if mode == "layered":
        return "layered: " + ", then ".join(f"{e.req.spec.name} ({e.req.where()})" for e in entries)
    if len(entries) == 1:
        return entries[0].req.where()
    return ", ".join(f"{e.req.spec.name} ({e.req.where()})" for e in entries)


def _select_snippet(pins: dict[str, str], base: str | None, mode: str | None, order: tuple[str, ...]) -> str:
    b = base or "BASE"
    modes = [mode] if mode else ["together", "layered"]
    fields = ", ".join(f'{n}: "{v}"' for n, v in pins.items())
    lines = ["add to matrix.yaml:", "  include:"]
    lines += [f"    - {{base: {b}, mode: {m}, {fields}}}" for m in modes]
    ordered = evidence.ordered_pins(pins, order)
    ids = ["-".join([b, *(f"{n}{v}" for n, v in ordered.items()), m]) for m in modes]
    lines.append("then: compat-matrix run " + " ".join(f"--select '{i}'" for i in ids))
    if base is None:
        lines.append("(BASE: the matrix base this Dockerfile's FROM image corresponds to)")
    return "\n".join(lines)


@dataclass
class _Checker:
    df: Dockerfile
    eff: Effective
    cells: list[Record]
    registry: Registry
    base: str | None
    order: tuple[str, ...]

    def __post_init__(self) -> None:
        self.findings: list[Finding] = []
        self.file = str(self.df.path)
        # Issues an error already names, so a later check does not repeat the same finding.
        self.reported: set[str] = set()
        self.combination_passes = False

    def add(self, level: str, line: int | None, message: str, fix: str = "") -> None:
        self.findings.append(Finding(level, self.file, line, message, fix))

    def scope(self, records: Iterable[Record]) -> list[Record]:
        return [r for r in records if self.base is None or r.base == self.base]

    def where(self) -> str:
        return f"on {self.base}" if self.base else "on any base of the results"

    def newest_passing(self, place: tuple[str, str]) -> dict[str, str] | None:
        passing = [r for r in self.cells if (r.base, r.mode) == place and r.outcome is Outcome.PASS]
        if not passing:
            return None
        best = max(passing, key=lambda r: evidence.newest_key(r.pins, self.order))
        return evidence.ordered_pins(best.pins, self.order)

    def combination(self) -> None:
        """The file's pins against the results: failing, mixed, warned, passing or untested."""
        if not self.cells:
            if self.eff.pins():
                self.add(WARNING, self.df.from_line, "no results to check the pins against",
                         "run `compat-matrix run` (the sweep), then preflight again")
            return
        names = [n for n in self.order if self.eff.pin(n)]
        if not names:
            return
        pins = {n: self.eff.pin(n) or "" for n in names}
        mode = self.eff.mode(names)
        last = self.eff.order(names)[-1].req.line
        how = _how(self.eff, names, mode)
        unpinned = [n for n in self.order if n not in names]
        if unpinned:
            self.partial(pins, unpinned, last, how)
            return
        same_pins = [r for r in self.cells if evidence.exactly(r, pins)]
        here = self.scope(r for r in same_pins if mode is None or r.mode == mode)
        label = f"{_pins_text(pins)}, installed {how},"
        if not here:
            # The same pins on other bases or in the other mode: worth knowing, not evidence.
            elsewhere = sorted(f"{r.base}·{r.mode}: {r.outcome.value}" for r in same_pins)
            seen = f" (results elsewhere: {'; '.join(elsewhere)})" if elsewhere else ""
            self.add(WARNING, last, f"{label} was never tested {self.where()}{seen}",
                     _select_snippet(pins, self.base, mode, self.order))
            return
        fails = [r for r in here if r.outcome.is_incompatibility]
        if self.base is None and any(r.outcome is not Outcome.NO_WHEEL for r in fails):
            # With no base named, a missing wheel speaks of some other Python, not of this image.
            for r in fails:
                if r.outcome is Outcome.NO_WHEEL:
                    self.add(NOTE, last, f"{r.cell}: no-wheel ({collapse(r.error)})")
            fails = [r for r in fails if r.outcome is not Outcome.NO_WHEEL]
        passes = [r for r in here if r.outcome is Outcome.PASS]
        warns = [r for r in here if r.outcome is Outcome.WARN]
        if fails and not passes:
            self.failing(label, fails, last)
        elif fails:
            self.add(WARNING, last, f"{label} passes on {', '.join(sorted({r.base for r in passes}))} but fails on "
                     f"{', '.join(sorted({r.base for r in fails}))}",
                     "name the base this image builds on with --base (or add its image to matrix.yaml)")
        elif warns and not passes:
            self.add(WARNING, last, f"{label} passed with a warning in {warns[0].cell}: {collapse(warns[0].error)}",
                     "a warned cell is not known-good; prefer pins that pass cleanly (compat-matrix pins …)")
        else:
            self.combination_passes = True
            self.add(NOTE, last, f"{label} passes in the results: "
                     + ", ".join(sorted(r.cell for r in passes)))

    def failing(self, label: str, fails: list[Record], line: int) -> None:
        groups: dict[str, list[Record]] = {}
        for r in fails:
            issue = self.registry.match_record(r)
            groups.setdefault(issue.name if issue else f"{r.outcome.value}: {collapse(r.error)}", []).append(r)
        for key, rs in groups.items():
            issue = self.registry.get(key)
            cells = ", ".join(sorted(r.cell for r in rs))
            on = ", ".join(sorted({r.base for r in rs}))
            better = self.newest_passing((rs[0].base, rs[0].mode))
            alternative = (f"\nnewest tested-good on {rs[0].base}·{rs[0].mode}: {_pins_text(better)}"
                           if better else "")
            if issue is not None:
                self.reported.add(issue.name)
                self.add(ERROR, line, f"{label} fails on {on}: {rs[0].outcome.value} in {cells}: "
                         f"known issue {issue.name} ({issue.cause})", issue.solution + alternative)
            else:
                self.add(ERROR, line, f"{label} fails on {on}: {rs[0].outcome.value} in {cells}: "
                         f"{collapse(rs[0].error)}",
                         "no known issue matches yet: `compat-matrix registry` suggests an entry" + alternative)

    def partial(self, pins: dict[str, str], unpinned: list[str], line: int, how: str) -> None:
        """Some matrix packages pinned, others left to the FROM image or the resolver: say what depends on it."""
        agreeing = self.scope(r for r in self.cells if evidence.agrees(r, pins))

        def partners(r: Record) -> str:
            return _pins_text({n: v for n, v in evidence.ordered_pins(r.pins, self.order).items() if n in unpinned})

        passes = sorted({f"{partners(r)} ({r.base}·{r.mode})" for r in agreeing if r.outcome is Outcome.PASS})
        fails = sorted({f"{partners(r)} ({r.base}·{r.mode}): "
                        + (f"known issue {i.name}" if (i := self.registry.match_record(r)) else r.outcome.value)
                        for r in agreeing if r.outcome.is_incompatibility})
        status = []
        if passes:
            status.append("passes with " + "; ".join(passes))
        if fails:
            status.append("fails with " + "; ".join(fails))
        missing = ", ".join(unpinned)
        first = next(iter(pins.items()))
        self.add(WARNING, line,
                 f"{_pins_text(pins)} ({how}) is pinned but {missing} is not: the result depends on the {missing} "
                 f"the FROM image or a dependency brings. Results: {'; '.join(status) or 'none'}",
                 f"pin {missing} too; `compat-matrix pins {first[0]}=={first[1]}` lists the tested partners")

    def requires(self) -> None:
        """Registry fixes (`requires`) missing or changed while the issue's other packages are installed."""
        for issue in self.registry.issues:
            if not issue.requires or issue.name in self.reported:
                continue
            wrong = []
            for n, v in issue.requires:
                others = [m for m, _ in issue.requires if m != n]
                if not all(self.eff.present(m) for m in others) or not (others or self.eff.present(n)):
                    continue
                if not evidence.same_version(self.eff.pin(n), v):
                    wrong.append((n, v))
            if not wrong:
                continue
            detail = "; ".join(self.state(n, v) for n, v in issue.requires
                               if not evidence.same_version(self.eff.pin(n), v))
            line = min((e.req.line for n, _ in issue.requires if (e := self.eff.get(n))), default=self.df.from_line)
            fix_pins = " ".join(f"{n}=={v}" for n, v in issue.requires)
            if self.combination_passes:
                self.add(NOTE, line, f"differs from the tested fix of {issue.name} ({detail}), "
                         "but the results show this file's pins passing")
                continue
            self.reported.add(issue.name)
            self.add(ERROR, line, f"the tested fix of known issue {issue.name} is not in place: {detail}",
                     f"{issue.solution}\n(the registry requires {fix_pins}; install them in one command "
                     "after the last install that touches these packages)")

    def state(self, name: str, wanted: str) -> str:
        entry = self.eff.get(name)
        if entry is None:
            return f"{name}: not installed by this file (wanted {wanted}; FROM may bring any version)"
        if entry.pin is None:
            return f"{name}: unpinned ({entry.req.spec.text}, {entry.req.where()}; wanted {wanted})"
        return f"{name}: {entry.pin} ({entry.req.where()}; wanted {wanted})"

    def baseline(self, bdf: Dockerfile) -> None:
        """Fixes the last working version carried that this file drops: the seed's v76."""
        beff = dockerparse.effective(bdf)
        bname = str(bdf.path)
        if bdf.base_image != self.df.base_image:
            self.add(NOTE, self.df.from_line, f"FROM {self.df.base_image} here, FROM {bdf.base_image} in the "
                     f"baseline ({bname}:{bdf.from_line}): fixes made in the baseline's layers do not come along")
        for issue in self.registry.issues:
            fix = issue.requires_dict
            if not fix or not all(evidence.same_version(beff.pin(n), v) for n, v in fix.items()):
                continue
            if all(evidence.same_version(self.eff.pin(n), v) for n, v in fix.items()):
                continue
            blines = sorted({e.req.line for n in fix if (e := beff.get(n))})
            detail = "; ".join(self.state(n, v) for n, v in fix.items()
                               if not evidence.same_version(self.eff.pin(n), v))
            where = f"{bname}:{', '.join(map(str, blines))}"
            if self.combination_passes:
                self.add(NOTE, self.df.from_line, f"the baseline's fix for {issue.name} ({where}) is replaced by "
                         "pins the results show passing")
                continue
            line = min((e.req.line for n in fix if (e := self.eff.get(n))), default=self.df.from_line)
            self.reported.add(issue.name)
            fix_text = " ".join(f"{n}=={v}" for n, v in fix.items())
            self.add(ERROR, line, f"fix for known issue {issue.name} not carried forward from the baseline "
                     f"({where} installs {fix_text}): {detail}",
                     f"carry it forward as the baseline does, after the last install touching these packages:\n"
                     f"RUN pip uninstall -y {' '.join(fix)} && pip install --no-cache-dir {fix_text}")
        for n in self.order:
            old, new = beff.get(n), self.eff.get(n)
            if old and old.pin and (new is None or not evidence.same_version(new.pin, old.pin)):
                now = f"{new.pin or 'unpinned'} ({new.req.where()})" if new else "not installed by this file"
                self.add(NOTE, new.req.line if new else self.df.from_line,
                         f"{n}: {old.pin} in the baseline ({bname}:{old.req.line}), now {now}")

    def late_installs(self) -> None:
        """Installs after the pins that may move them: pip resolves each command on its own."""
        pinned = [e for n in self.order if (e := self.eff.get(n)) is not None and e.pin]
        if not pinned:
            return
        last = max(e.step.index for e in pinned)
        keys = {e.req.spec.key for e in pinned}
        for step in self.df.steps:
            if step.index <= last or step.verb != "install" or step.no_deps:
                continue
            names = [r.spec.name for r in step.installs if r.spec.key not in keys] + list(step.others)
            if not names or keys <= set(step.constrained):
                continue
            moved = ", ".join(e.req.spec.name for e in pinned)
            self.add(WARNING, step.line, f"installs {', '.join(names)} after the pins of {moved} "
                     f"({', '.join(sorted({e.req.where() for e in pinned}))}): its resolver may replace them",
                     f"install it before the pins, or give it the pins: -c constraints.txt holding "
                     f"{' '.join(f'{e.req.spec.name}=={e.pin}' for e in pinned)}")


def preflight(
    dockerfile: str | Path | Dockerfile,
    baseline: str | Path | Dockerfile | None = None,
    records: Iterable[Record] = (),
    registry: Registry | None = None,
    *,
    base: str | None = None,
    images: dict[str, str] | None = None,
    build_args: dict[str, str] | None = None,
    packages: Iterable[str] = (),
) -> Report:
    """Check a Dockerfile (a path, or one already read: hook.py's requirements files and git baselines).
    ConfigError (exit 2) when it, the baseline or a requirements file is unreadable.

    `base` names the matrix base the image builds on; otherwise `images` (image → base name, from
    matrix.yaml) maps the FROM image to one, and failing that every base of the results counts.
    """
    df = dockerfile if isinstance(dockerfile, Dockerfile) else dockerparse.parse(dockerfile, build_args)
    bdf = (baseline if isinstance(baseline, Dockerfile) or baseline is None
           else dockerparse.parse(baseline, build_args))
    cells = evidence.with_verdict(evidence.current(records))
    order = evidence.package_order(cells, packages)
    checker = _Checker(df, dockerparse.effective(df), cells, registry or Registry(None), base, order)
    image = df.base_image or "?"
    if base is None and images:
        by_image = {normalise_image(i): b for i, b in images.items()}
        base = by_image.get(normalise_image(image))
        checker.base = base
        if base:
            checker.add(NOTE, df.from_line, f"FROM {image} is base {base} of the matrix")
    if base is None and cells:
        checker.add(NOTE, df.from_line, f"FROM {image} is not a base of the matrix: evidence from every base "
                    f"counts ({', '.join(sorted({r.base for r in cells}))}); name one with --base")
    elif base is not None and cells and not any(r.base == base for r in cells):
        checker.add(WARNING, df.from_line, f"the results have no cell on base {base}",
                    f"run the sweep on it, or pick one of: {', '.join(sorted({r.base for r in cells}))}")
    for line, note in df.notes:
        checker.add(WARNING, line, note)
    checker.combination()
    if bdf is not None:
        checker.baseline(bdf)
    checker.requires()
    checker.late_installs()
    return Report(str(df.path), tuple(checker.findings))


def run_preflight(
    dockerfile: str | Path,
    baseline: str | Path | None,
    records: Iterable[Record],
    registry: Registry | None,
    *,
    strict: bool = False,
    **options: object,
) -> tuple[int, str]:
    """(exit code, text): 0 clean, 1 problems found, 2 unreadable input (the message names the file)."""
    try:
        report = preflight(dockerfile, baseline, records, registry, **options)  # type: ignore[arg-type]
    except ConfigError as e:
        return EXIT_CONFIG, f"compat-matrix preflight: {e}\n"
    return report.exit_code(strict), report.format()
