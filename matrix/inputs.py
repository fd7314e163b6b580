"""Reading the user's input files: text with a ConfigError that names the file, and strict YAML.

The matrix file and the registry are both YAML the user writes by hand; both refuse what plain
safe_load lets through silently (a duplicate key keeps only the last value) and every !!python/ tag,
and both are bounded: a document nested more than MAX_DEPTH levels, or whose aliases would expand
it by more than MAX_ALIAS_NODES nodes (an "alias bomb": a few hundred bytes that expand to
billions of nodes), or whose alias refers to a node that contains it, is refused before anything
is built from it. Merge keys (`<<: *common`, to share base settings) are read as YAML 1.1 says:
the mapping's own keys win over merged ones.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from matrix import __version__
from matrix.errors import ConfigError, has_credentials
from matrix.paths import atomic_write, cache_root

MAX_DEPTH = 64  # lists and mappings inside each other; a matrix file needs 5
MAX_ALIAS_NODES = 100_000  # nodes aliases may add to a document, counted as they would expand
_KEPT_VERSION = b"2\0"  # what a kept document had to pass changed with the bounds above


def read_text(path: Path, what: str, missing_fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", f"no such {what}", missing_fix) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "", f"cannot read it ({e})", "check the path and its permissions") from None


def load_yaml(text: str, file: str) -> Any:
    """Parse strictly; a ConfigError naming the file for bad YAML, a python tag, a duplicate key, or
    a document beyond the bounds.

    A document that is plain JSON data (mappings with string keys, lists, strings, numbers, true,
    false, null: what a matrix file is) is kept as JSON in the tool's cache under the hash of its
    text, and read back from there: an unchanged re-run neither imports the YAML parser (10 ms)
    nor parses. Only what parsed cleanly is kept, so an error is found every time; a text holding
    a URL with credentials (user:password@) is never kept, so the cache holds no secret."""
    where = cache_root() / "parsed"
    # The tool's version in the key: a new version may read the same text otherwise.
    kept = where / f"{hashlib.sha256(_KEPT_VERSION + __version__.encode() + text.encode()).hexdigest()}.json"
    if has_credentials(text):
        # What an earlier version may have kept of this very text goes too.
        for old in (kept, where / f"{hashlib.sha256(text.encode()).hexdigest()}.json"):
            try:
                old.unlink(missing_ok=True)
            except OSError:
                pass
        return _parse(text, file)
    try:
        found = json.loads(kept.read_text(encoding="utf-8"))
        os.utime(kept)  # in use: pruning goes by the last use
        return found
    except (OSError, ValueError, RecursionError):
        pass
    value = _parse(text, file)
    if _plain(value):
        body = json.dumps(value)
        if len(body) <= 1_000_000 + 16 * len(text):  # bounded anyway; no cache many times the file
            try:
                atomic_write(kept, body)
                _prune(where)
            except OSError:
                pass  # a cache only
    return value


# Parsed documents not read for this long go when a new one is kept (the folder would only grow).
PRUNE_AFTER_S = 30 * 24 * 3600


def _prune(where: Path) -> None:
    cutoff = time.time() - PRUNE_AFTER_S
    with os.scandir(where) as entries:
        for entry in entries:
            try:
                if entry.name.endswith(".json") and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass


def _plain(value: Any) -> bool:
    """Whether JSON gives back exactly this value."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


class _Refused(Exception):
    """A document beyond the loader's bounds."""

    def __init__(self, line: int | None, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.line, self.problem, self.fix = line, problem, fix


def _parse(text: str, file: str) -> Any:
    import yaml

    loader = None
    try:
        loader = _strict_loader()(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except _Refused as e:
        raise ConfigError(file, f"line {e.line}" if e.line else "", e.problem, e.fix) from None
    except RecursionError:  # the bounds above should make this unreachable; a traceback it is not
        raise ConfigError(file, "", "nested too deeply to read", f"keep lists and mappings under {MAX_DEPTH} "
                          "levels deep") from None
    except yaml.YAMLError as e:
        if "tag:yaml.org,2002:python/" in str(e):
            raise ConfigError(file, "", "a !!python/ tag is refused: this file holds data, not objects",
                              "write the value as a plain string, list or mapping") from None
        raise ConfigError(file, "", f"not valid YAML: {e}", "fix the YAML syntax at the place shown") from None
    finally:
        if loader is not None:
            loader.dispose()


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Any) -> None:
    """Refuse a node graph whose aliases would expand it by more than MAX_ALIAS_NODES nodes, or
    that refers to itself. Each distinct node is visited once (no recursion, no expansion)."""
    size: dict[int, int] = {}  # id(node) → its node count, aliases expanded
    on_path: set[int] = set()  # the nodes being sized: reaching one again is a cycle
    distinct = 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Refused(node.start_mark.line + 1, "an alias refers to a list or mapping that contains it "
                           "(a document that never ends)", "give the value itself instead of the alias")
        on_path.add(key)
        distinct += 1
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    if size[id(root)] - distinct > MAX_ALIAS_NODES:
        raise _Refused(None, f"its aliases (*name) expand it to {size[id(root)]:,} values, more than "
                       f"{MAX_ALIAS_NODES:,} beyond what is written (an alias bomb?)",
                       "write the values out, or use fewer levels of aliases")


@functools.cache
def _strict_loader() -> type:
    """safe_load's loader, plus a refusal of duplicate keys and a bound on nesting."""
    import yaml

    merge = "tag:yaml.org,2002:merge"

    class StrictLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = 0
            # id(mapping node) → its own key nodes, as written: a merge (flatten_mapping) adds the
            # merged ones to the node, and those may be overridden.
            self.own_keys: dict[int, list[Any]] = {}

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise _Refused(self.peek_event().start_mark.line + 1,
                                   f"lists and mappings nested more than {MAX_DEPTH} levels deep",
                                   "a matrix or registry file needs a few levels; flatten the structure")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, OverflowError) as e:  # a 5000-digit int, a 30th of February
                value = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
                shown = repr(value) if len(value) <= 40 else f"{value[:30]!r}... ({len(value)} characters)"
                kind = node.tag.rsplit(":", 1)[-1]
                raise _Refused(node.start_mark.line + 1, f"{shown} cannot be read as a YAML {kind} "
                               f"({str(e).split(';')[0]})", "quote it if it is text, or give a valid value") from None

        def compose_mapping_node(self, anchor: Any) -> Any:
            node = super().compose_mapping_node(anchor)
            self.own_keys[id(node)] = [k for k, _ in node.value if k.tag != merge]
            return node

        def flatten_mapping(self, node: Any) -> None:
            """YAML 1.1's merge: the merged mappings' pairs first (of a list of them, the first
            listed wins), the mapping's own after them, so that its own keys win. PyYAML 6.0.3+
            keeps only the first pair per key name, which lets a merged mapping's own override
            lose to what that mapping merged itself (mid: {<<: *base, a: 2}; {<<: *mid} gave
            base's a); the expansion bound keeps these lists small."""
            merged: list[Any] = []
            index = 0
            while index < len(node.value):
                key_node, value_node = node.value[index]
                if key_node.tag != merge:
                    if key_node.tag == "tag:yaml.org,2002:value":
                        key_node.tag = "tag:yaml.org,2002:str"
                    index += 1
                    continue
                del node.value[index]
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in reversed(sources):  # later pairs win: the first listed goes last
                    if not isinstance(source, yaml.MappingNode):
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"a merge (<<) takes a mapping or a list of mappings, not a {source.id}",
                            source.start_mark)
                    self.flatten_mapping(source)
                    merged.extend(source.value)
            if merged:
                node.value = merged + node.value

    def construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node in loader.own_keys.get(id(node), [k for k, _ in node.value]):
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: construct_mapping says so, with its place
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def kind_of(value: Any) -> str:
    """What a parsed value is, in a message's words ("a mapping", "a list", "nothing", ...)."""
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """The fix for an unknown key or value: the closest allowed one, or all of them."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(choices)}"
