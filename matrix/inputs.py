"""Reading the user's input files: text with a ConfigError that names the file, and strict YAML.

The matrix file and the registry are both YAML the user writes by hand; both refuse what plain
safe_load lets through silently (a duplicate key keeps only the last value) and every !!python/ tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from matrix.errors import ConfigError


def read_text(path: Path, what: str, missing_fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", f"no such {what}", missing_fix) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "", f"cannot read it ({e})", "check the path and its permissions") from None


class _StrictLoader(yaml.SafeLoader):
    """safe_load, plus a refusal of duplicate keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, file: str) -> Any:
    """Parse strictly; a ConfigError naming the file for bad YAML, a python tag or a duplicate key."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        if "tag:yaml.org,2002:python/" in str(e):
            raise ConfigError(file, "", "a !!python/ tag is refused: this file holds data, not objects",
                              "write the value as a plain string, list or mapping") from None
        raise ConfigError(file, "", f"not valid YAML: {e}", "fix the YAML syntax at the place shown") from None
