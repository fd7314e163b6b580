"""The commands that hand the registry's knowledge to other tools: `export constraints` (pip / uv
constraints files), `schema` (JSON Schemas for editors) and `precommit` (the pre-commit hook's entry).

`add_commands(subparsers)` adds them; commands.py mounts them with the registry's other commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matrix import registry
from matrix.errors import EXIT_FAILED, EXIT_OK
from matrix.registry import evidence
from matrix.registry.cliargs import Handler, build_args, images, records_if_any


def _load_registry(path: Path) -> registry.Registry:
    """The registry; an absent default one is an empty registry (a repository may keep none)."""
    if path == registry.DEFAULT_PATH and not path.exists():
        return registry.Registry(None)
    return registry.load(path)


# The handlers import what they use: the command line builds every parser on each run, and a run
# needs none of these.
def cmd_export(args: argparse.Namespace) -> int:
    from matrix.registry import constraints

    reg = _load_registry(args.registry)
    records = evidence.latest_records(args.results)
    export = constraints.build(records, reg, base=args.base)
    written = constraints.write(export, args.output)
    for path, f in zip(written, export.files, strict=True):
        print(f"wrote {path}: base {f.base} ({', '.join(f.modes)}): {' '.join(f'{n}=={v}' for n, v in f.pins)}")
    for base, mode, tested in export.no_pass:
        print(f"no constraints for {base}·{mode}: none of its {tested} cell(s) passed")
    if not written:
        print("no base has a passing cell: nothing written")
        return EXIT_FAILED
    return EXIT_OK


def cmd_bounds(args: argparse.Namespace) -> int:
    """The bounds audit over the results: declared requirements judged by the override cells."""
    from matrix.registry import bounds

    findings = bounds.audit(evidence.latest_records(args.results))
    if args.format == "json":
        print(bounds.as_json(findings), end="")
    else:
        print(bounds.markdown(findings) or "no declared bound met in these results (run a matrix with "
              "modes: [together, override])\n", end="")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from matrix.registry import schema

    print(schema.text(args.which), end="")
    return EXIT_OK


def cmd_precommit(args: argparse.Namespace) -> int:
    from matrix.registry import hook

    reg = _load_registry(args.registry)
    code, text = hook.check(args.files, records_if_any(args.results), reg, base=args.base,
                            images=images(args.config), build_args=dict(build_args(args.build_arg)), strict=args.strict)
    print(text, end="")
    return code


def add_commands(subparsers: argparse._SubParsersAction) -> dict[str, Handler]:
    ex = subparsers.add_parser("export", help="hand the known-good pins to other tools: "
                               "`export constraints` writes pip / uv constraints files")
    ex.add_argument("what", choices=("constraints",), help="constraints: one file per base (and mode, where "
                    "they differ) that pip -c, uv pip install -c and UV_CONSTRAINT read")
    ex.add_argument("--base", help="only this base of the results")
    ex.add_argument("--output", type=Path, default=Path("constraints"),
                    help="the directory the files go to (default: constraints)")
    ex.add_argument("--registry", type=Path, default=registry.DEFAULT_PATH,
                    help=f"the known-issue registry, for the known-bad comments (default: {registry.DEFAULT_PATH})")
    ex.add_argument("--results", type=Path, default=Path("results"),
                    help="the sweep's output directory (default: results)")

    bd = subparsers.add_parser("bounds", help="the bounds audit: each declared requirement a together cell ran "
                               "into, judged by its override cell (needed, too strict), and pins the resolver "
                               "allowed that break (missing)")
    bd.add_argument("--results", type=Path, default=Path("results"),
                    help="the sweep's output directory (default: results)")
    bd.add_argument("--format", choices=("markdown", "json"), default="markdown")

    sc = subparsers.add_parser("schema", help="print the JSON Schema of matrix.yaml or known-issues.yaml "
                               "(for editors: # yaml-language-server: $schema=...)")
    sc.add_argument("which", choices=("matrix", "registry"))  # schema.NAMES

    pc = subparsers.add_parser("precommit", help="preflight the Dockerfiles and requirements files pre-commit "
                               "passes, each against its last committed version (exit 1 on a known-bad "
                               "combination or a dropped fix)")
    pc.add_argument("files", nargs="*", type=Path, metavar="FILE")
    pc.add_argument("--base", help="the matrix base the images build on (default: found from FROM via --config)")
    pc.add_argument("--config", type=Path, default=None, help="the matrix file, to map FROM images to bases")
    pc.add_argument("--build-arg", action="append", metavar="NAME=VALUE", help="a build arg (repeatable)")
    pc.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    pc.add_argument("--registry", type=Path, default=registry.DEFAULT_PATH,
                    help=f"the known-issue registry (default: {registry.DEFAULT_PATH}; none if absent)")
    pc.add_argument("--results", type=Path, default=Path("results"),
                    help="the sweep's output directory, read for evidence (default: results; none if absent)")
    return {"export": cmd_export, "bounds": cmd_bounds, "schema": cmd_schema, "precommit": cmd_precommit}

