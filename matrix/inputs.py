"""Reading the user's input files: text with a ConfigError that names the file, and strict YAML.

The matrix file and the registry are both YAML the user writes by hand; both refuse what plain
safe_load lets through silently (a duplicate key keeps only the last value) and every !!python/ tag.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from matrix.errors import ConfigError
from matrix.store import atomic_write


def read_text(path: Path, what: str, missing_fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", f"no such {what}", missing_fix) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "", f"cannot read it ({e})", "check the path and its permissions") from None


def load_yaml(text: str, file: str) -> Any:
    """Parse strictly; a ConfigError naming the file for bad YAML, a python tag or a duplicate key.

    A document that is plain JSON data (mappings with string keys, lists, strings, numbers, true,
    false, null: what a matrix file is) is kept as JSON in the tool's cache under the hash of its
    text, and read back from there: an unchanged re-run neither imports the YAML parser (10 ms)
    nor parses. Only what parsed cleanly is kept, so an error is found every time."""
    from matrix.resultcache import cache_root  # here: resultcache imports spec, which imports this

    kept = cache_root() / "parsed" / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    try:
        return json.loads(kept.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    value = _parse(text, file)
    if _plain(value):
        try:
            atomic_write(kept, json.dumps(value))
        except OSError:
            pass  # a cache only
    return value


def _plain(value: Any) -> bool:
    """Whether JSON gives back exactly this value."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


def _parse(text: str, file: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        if "tag:yaml.org,2002:python/" in str(e):
            raise ConfigError(file, "", "a !!python/ tag is refused: this file holds data, not objects",
                              "write the value as a plain string, list or mapping") from None
        raise ConfigError(file, "", f"not valid YAML: {e}", "fix the YAML syntax at the place shown") from None


@functools.cache
def _strict_loader() -> type:
    """safe_load's loader, plus a refusal of duplicate keys."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader
