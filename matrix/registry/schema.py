"""JSON Schemas of the two hand-written inputs, matrix.yaml and known-issues.yaml, for editors.

The schemas are files in the package (matrix/registry/schemas/*.json, shipped as package data) so an
editor can point at them (`# yaml-language-server: $schema=...`); `compat-matrix schema matrix|registry`
prints them. The validators (spec.py, registry/__init__.py) stay the authority: the schemas agree with
them on every example and every refused file the tests hold, and tests/unit/test_schemas.py lists
where a schema cannot say what a validator checks.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

NAMES = ("matrix", "registry")


def text(name: str) -> str:
    """The schema's file as shipped (KeyError for a name not in NAMES)."""
    if name not in NAMES:
        raise KeyError(name)
    return resources.files("matrix.registry").joinpath("schemas").joinpath(f"{name}.json").read_text(encoding="utf-8")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text(name))
    return data
