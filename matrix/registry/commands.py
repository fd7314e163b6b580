"""The registry's subcommands: `pins`, `preflight`, `guard` and `registry`, for matrix/cli.py to mount.

`add_commands(subparsers)` adds them to the main parser and returns name → handler(args) -> int.
Handlers raise ConfigError for bad input (exit 2); the main command line turns it into a message.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matrix import registry
from matrix.errors import EXIT_FAILED, EXIT_OK
from matrix.registry import cliargs, evidence, exportcmds, guardfile


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, default=registry.DEFAULT_PATH,
                   help=f"the known-issue registry (default: {registry.DEFAULT_PATH})")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="the sweep's output directory, read for evidence (default: results)")


def cmd_pins(args: argparse.Namespace) -> int:
    reg = registry.load(args.registry)
    records = evidence.latest_records(args.results)
    from matrix.registry import advisor

    advice = advisor.advise(records, args.query, base=args.base, registry=reg, maximise=args.newest)
    if args.format == "json":
        from matrix.registry import constraints

        print(constraints.advice_json(advice), end="")
    elif args.format == "constraints":
        from matrix.registry import constraints

        text = constraints.advice_constraints(advice)
        if text is None:
            print(f"# compat-matrix pins {advice.query}: no partner passed with it: no constraints to give")
            return EXIT_FAILED
        print(text, end="")
    else:
        print(advisor.format_advice(advice), end="")
    return EXIT_OK


def cmd_preflight(args: argparse.Namespace) -> int:
    reg = registry.load(args.registry)
    from matrix.registry import preflight

    report = preflight.preflight(
        args.dockerfile, args.baseline, cliargs.records_if_any(args.results), reg,
        base=args.base, images=cliargs.images(args.config), build_args=dict(cliargs.build_args(args.build_arg)),
    )
    print(report.format(), end="")
    return report.exit_code(args.strict)


def cmd_guard(args: argparse.Namespace) -> int:
    reg = registry.load(args.registry)
    path = guardfile.write(args.output, reg, cliargs.records_if_any(args.results))
    print(f"wrote {path} ({len(reg.issues)} issue(s)); in the Dockerfile, after the installs:")
    print(f"  COPY {path.name} /tmp/{path.name}")
    print(f"  RUN python /tmp/{path.name}")
    return EXIT_OK


def cmd_registry(args: argparse.Namespace) -> int:
    reg = registry.load(args.registry)
    print(f"{args.registry}: {len(reg.issues)} issue(s), valid")
    if not cliargs.has_results(args.results):
        print(f"no results in {args.results}: run `compat-matrix run` to match failures against the registry")
        return EXIT_OK
    records = evidence.current(evidence.latest_records(args.results))
    failing = [r for r in records if r.outcome.is_incompatibility]
    matched = reg.matches(failing)
    for issue in reg.issues:
        cells = sorted(c for c, i in matched.items() if i == issue)
        print(f"  {issue.name}: {len(cells)} failing cell(s)" + (f", e.g. {cells[0]}" if cells else ""))
    groups = registry.group_unmatched(failing, reg)
    print(f"{len(failing)} failing cell(s), {len(matched)} matched, "
          f"{sum(len(g.records) for g in groups)} in {len(groups)} unmatched group(s)")
    for n, group in enumerate(groups, start=1):
        print(f"\n[{n}] {group.outcome.value} × {len(group.records)}: {group.signature}")
        print("suggested entry for the registry:")
        print(registry.suggest_entry(group, reg), end="")
    if args.write_known_good:
        from matrix.registry import knowngood

        path = knowngood.write(records, reg)
        print(f"\nwrote {path}")
    return EXIT_OK


def add_commands(subparsers: argparse._SubParsersAction) -> dict[str, cliargs.Handler]:
    pins = subparsers.add_parser("pins", help="what the results say about one pin: partners that pass, "
                                 "failures and their known issues, untested values")
    pins.add_argument("query", metavar="NAME==VERSION", help="e.g. numpy==2.0.2")
    pins.add_argument("--base", help="only this base of the matrix")
    pins.add_argument("--newest", metavar="PACKAGE",
                      help="sort by this partner first: the newest PACKAGE that works with the pin")
    pins.add_argument("--format", choices=("text", "constraints", "json"), default="text",
                      help="text (default); constraints: the pin and its newest passing partners as a pip / uv "
                           "constraints file (exit 1 when none passed); json: the whole answer, for CI")
    _common(pins)

    pre = subparsers.add_parser("preflight", help="check a Dockerfile against the results and the registry "
                                "(exit 0 clean, 1 problems found, 2 unreadable input)")
    pre.add_argument("dockerfile", type=Path, metavar="DOCKERFILE")
    pre.add_argument("--baseline", type=Path, metavar="DOCKERFILE",
                     help="the last working version's Dockerfile: its fixes must be carried forward")
    pre.add_argument("--base", help="the matrix base this image builds on (default: found from FROM via --config)")
    pre.add_argument("--config", type=Path, default=None,
                     help=f"the matrix file, to map FROM images to bases "
                          f"(default: {cliargs.DEFAULT_CONFIG} if present)")
    pre.add_argument("--build-arg", action="append", metavar="NAME=VALUE", help="a build arg (repeatable)")
    pre.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    _common(pre)

    guard = subparsers.add_parser("guard", help="write the stdlib-only guard a Dockerfile runs as a checkpoint")
    guard.add_argument("--output", type=Path, default=Path(guardfile.DEFAULT_NAME),
                       help=f"where to write it (default: {guardfile.DEFAULT_NAME})")
    _common(guard)

    reg = subparsers.add_parser("registry", help="validate the registry; suggest entries for unmatched failures")
    reg.add_argument("--write-known-good", action="store_true",
                     help="also write known-good.yaml beside the registry from the latest results")
    _common(reg)
    return {"pins": cmd_pins, "preflight": cmd_preflight, "guard": cmd_guard, "registry": cmd_registry,
            **exportcmds.add_commands(subparsers)}
