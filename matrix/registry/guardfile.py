"""Writes the guard: probes/_guard.py (a script that runs in users' images, like the probes) with the
registry's entries embedded as JSON.

The guard runs inside the user's image with nothing but the standard library, so everything it
needs (signatures, causes, fixes, probes, where each issue was seen) travels inside the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matrix import probing
from matrix.paths import atomic_write
from matrix.registry import Registry, evidence
from matrix.store import Record

TEMPLATE = probing.probes_dir() / "_guard.py"
_MARKER = "ISSUES_JSON = '[]'"
DEFAULT_NAME = "guard.py"


def payload(registry: Registry, records: Iterable[Record] = ()) -> list[dict[str, Any]]:
    """The entries as the guard reads them, with the cells each issue was seen in."""
    cells = evidence.current(records)
    out = []
    for issue in registry.issues:
        sig = issue.signature
        out.append({
            "issue": issue.name,
            "error": {"regex": sig.pattern} if sig.regex else {"substring": sig.pattern},
            "cause": issue.cause,
            "solution": issue.solution,
            "versions": list(issue.versions),
            "probe": issue.probe,
            "requires": issue.requires_dict,
            "seen_in": sorted(r.cell for r in cells if registry.match_record(r) == issue),
        })
    return out


def render(registry: Registry, records: Iterable[Record] = ()) -> str:
    source = TEMPLATE.read_text(encoding="utf-8")
    if source.count(_MARKER) != 1:
        raise RuntimeError(f"{TEMPLATE} lost its {_MARKER!r} line")
    # ASCII JSON inside a Python string literal: repr() quotes it correctly whatever it holds.
    embedded = json.dumps(payload(registry, records), sort_keys=True, ensure_ascii=True)
    return source.replace(_MARKER, f"ISSUES_JSON = {embedded!r}")


def write(path: Path, registry: Registry, records: Iterable[Record] = ()) -> Path:
    atomic_write(path, render(registry, records))
    path.chmod(0o755)
    return path
