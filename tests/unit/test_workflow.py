"""The scheduled-sweep workflow cannot run here; what can be checked is checked: it parses, it
is scheduled and dispatchable, and every nox session and compat-matrix command it runs exists
and accepts the arguments it is given."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import yaml

from matrix import cli

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "compat-sweep.yml"


def sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    return {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
            and any("session" in ast.unparse(d) for d in f.decorator_list)}


def commands() -> list[list[str]]:
    data = yaml.safe_load(WORKFLOW.read_text())
    out = []
    for job in data["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                # ${{ ... }} is filled by Actions; a sample value stands in for it.
                line = re.sub(r"\$\{\{[^}]*\}\}", "1/4", line)
                line = re.sub(r'"\$\w+"', "4", line)  # a shell variable: $SHARDS
                line = line.split("||")[0].split(">>")[0]
                for m in re.finditer(r"(nox -s \S+(?: -- [^|;]*)?|compat-matrix [^|;)\"]*)", line):
                    out.append(shlex.split(m.group(1)))
    return out


def test_the_workflow_is_scheduled_and_dispatchable() -> None:
    data = yaml.safe_load(WORKFLOW.read_text())
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    assert set(data["jobs"]) == {"plan", "sweep", "merge"}
    assert data["jobs"]["merge"]["needs"] == "sweep"


def test_every_command_exists_and_takes_its_arguments() -> None:
    found = commands()
    assert {c[0] for c in found} == {"nox", "compat-matrix"}
    parser = cli._parser()
    for argv in found:
        if argv[0] == "nox":
            assert argv[2] in sessions(), argv
            if "--" in argv:
                assert argv[2] == "matrix"  # the matrix session passes its arguments to `run`
                parser.parse_args(["run", *argv[argv.index("--") + 1:]])
        else:
            args = parser.parse_args(argv[1:])
            assert args.command in cli.COMMANDS, argv
    assert any(a[:2] == ["compat-matrix", "merge"] for a in found)
    assert any(a[:2] == ["compat-matrix", "shards"] for a in found)
