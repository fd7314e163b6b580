"""The host side of the probes: where the scripts are, what they are told, what they said.

The scripts themselves live in `probes/` (installed as `matrix.probes`) and run inside the cell.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix.cells import Cell


def probes_dir() -> Path:
    # A source checkout keeps probes/ beside the package; an installed one ships it inside.
    checkout = Path(__file__).resolve().parent.parent / "probes"
    if (checkout / "_driver.py").is_file():
        return checkout
    found = importlib.util.find_spec("matrix.probes")
    if found is None or found.origin is None:
        raise RuntimeError("the probe scripts are missing from this installation of compat-matrix")
    return Path(found.origin).parent


def probe_files() -> dict[str, Path]:
    return {p.name: p for p in sorted(probes_dir().glob("*.py")) if p.name != "__init__.py"}


def new_nonce() -> str:
    return secrets.token_hex(16)


def environment(cell: Cell, nonce: str, timeout_s: float) -> dict[str, str]:
    """What the driver is told: the cell's pins, the per-probe limit and the nonce."""
    return {
        "COMPAT_MATRIX_PINS": json.dumps(cell.pin_dict),
        "COMPAT_MATRIX_PROBE_TIMEOUT": str(timeout_s),
        "COMPAT_MATRIX_NONCE": nonce,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
    }


@dataclass
class DriverReport:
    python: str | None = None
    installed: dict[str, str | None] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False


def parse(output: str, nonce: str) -> DriverReport:
    """Only lines that start with this run's nonce count; anything else is noise."""
    report = DriverReport()
    prefix = nonce + " "
    for line in output.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            obj = json.loads(line[len(prefix):])
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        kind = obj.get("kind")
        if kind == "env":
            report.python = obj.get("python")
            report.installed = dict(obj.get("installed") or {})
        elif kind == "probe":
            report.probes.append(obj)
        elif kind == "done":
            report.complete = True
    return report
