"""A pytest plugin for tests/unit/test_schemas.py: records every document the two validators were
given while other tests ran (the parsed YAML, and whether it was accepted or the ConfigError's key
and problem), written with pickle to $COMPAT_MATRIX_SCHEMA_HARVEST when the session ends.

tests/unit/conftest.py imports it (the wrappers go in at import) and calls dump() when the session
ends; it changes nothing the tests see.
"""

from __future__ import annotations

import copy
import os
import pickle
from typing import Any

import matrix.registry as registry
from matrix import spec
from matrix.errors import ConfigError

SEEN: list[tuple[str, Any, tuple[str, str] | None]] = []


def _wrap(kind: str, cls: type, method: str) -> None:
    original = getattr(cls, method)

    def recorded(self: Any, data: Any) -> Any:
        try:
            kept = copy.deepcopy(data)
        except RecursionError:
            kept = None
        try:
            out = original(self, data)
        except ConfigError as e:
            if kept is not None:
                SEEN.append((kind, kept, (e.key, e.problem)))
            raise
        if kept is not None:
            SEEN.append((kind, kept, None))
        return out

    setattr(cls, method, recorded)


_wrap("matrix", spec._Validator, "spec")
_wrap("registry", registry._Validator, "entries")


def dump() -> None:
    """At the session's end (conftest.py): the documents, to $COMPAT_MATRIX_SCHEMA_HARVEST when set."""
    target = os.environ.get("COMPAT_MATRIX_SCHEMA_HARVEST")
    if target:
        with open(target, "wb") as f:
            pickle.dump(SEEN, f)
