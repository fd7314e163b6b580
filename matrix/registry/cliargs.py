"""What the registry's commands (commands.py, exportcmds.py) and `check` read from their arguments:
the results for evidence, `--build-arg` pairs, and the matrix file's images for FROM lines.

Both command modules import this one, and neither imports the other's helpers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from matrix import spec
from matrix.errors import ConfigError
from matrix.registry import evidence
from matrix.store import Record

Handler = Callable[[argparse.Namespace], int]
DEFAULT_CONFIG = Path("matrix.yaml")


def has_results(results: Path) -> bool:
    runs = results / "runs"
    return (results / evidence.RECORDS_FILE).is_file() or (runs.is_dir() and any(runs.glob("*.jsonl")))


def records_if_any(results: Path) -> list[Record]:
    """The latest records, or none when no sweep wrote any (a corrupt file is still an error)."""
    return evidence.latest_records(results) if has_results(results) else []


def build_args(pairs: list[str] | None) -> tuple[tuple[str, str], ...]:
    """--build-arg KEY=VALUE pairs, in order (a value may hold '=' or be empty)."""
    out = []
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError("--build-arg", pair, "is not KEY=VALUE", "e.g. --build-arg BASE=python:3.11")
        out.append((key, value))
    return tuple(out)


def images(config: Path | None) -> dict[str, str]:
    """image → base name from the matrix file, so a FROM line finds its base; {} with no matrix file."""
    path = config if config is not None else DEFAULT_CONFIG
    if config is None and not path.is_file():
        return {}
    s = spec.load(path)
    return {b.image: b.name for b in s.bases if b.image}
