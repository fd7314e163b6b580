"""The known-issue registry: the user's "living issues document", read, validated and matched.

The file (default registry/known-issues.yaml) is a YAML list of entries in the seed guide's shape,
written and kept by people; the tool reads it and never writes it (derived facts go to
known-good.yaml beside it, see knowngood.py), so hand-written fields and comments are never lost.

    - issue: numpy_scipy_incompatibility            # required: a name, unique in the file
      error: "numpy.dtype size changed"             # required: the signature (rules below)
      cause: "Binary incompatibility between NumPy and SciPy versions"        # required
      solution: "pip install numpy==1.24.3 scipy==1.10.1"                     # required
      versions: [v74.3, v76]                        # optional: your image versions that hit it
      probe: "import scipy.stats"                   # optional: a python snippet the guard runs
      requires: {numpy: "1.24.3", scipy: "1.10.1"}  # optional: the pins of the tested fix

Signature rules (`error`):
- a string is a literal, case-sensitive substring. Both it and the failure text have their
  whitespace runs collapsed to one space before the search, so a wrapped traceback still matches.
  It must be one line of at least 8 characters and more than a bare exception name ("ValueError"
  would match every ValueError in the matrix).
- `{regex: "..."}` is a Python regular expression, searched (not anchored) in the same collapsed
  text; use (?i) for case-insensitive. It must compile and must not match the empty string (it
  would match every failure). No registry can hang a run: a regex that can backtrack
  catastrophically is refused at load (a quantifier inside a repeated group, `(a+)+`; repeated
  alternatives that can match the same text, `(a|aa)+`; two adjacent open-ended repeats over
  the same characters, `\\s*\\s*`), a regex is searched in at most MATCH_CHARS characters of the
  text (the first and the last half of that when it is longer), and, in the main thread, for at
  most MATCH_SECONDS: past that, the entry does not match that text, and stderr says so.

`requires`, when absent, is read from `solution` if that is a pip / uv pip install command line
(`pip uninstall -y numpy scipy && pip install numpy==1.24.3 scipy==1.10.1` gives numpy 1.24.3 and
scipy 1.10.1). Only exact `==` pins count.

Only failing cells are matched (outcomes that are evidence of an incompatibility); an
infra-error never is, since it says nothing about the combination.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

from matrix.errors import ConfigError
from matrix.inputs import did_you_mean, kind_of, load_yaml, read_text
from matrix.registry import evidence
from matrix.store import Outcome, Record

if TYPE_CHECKING:
    from matrix import report

DEFAULT_PATH = Path("registry") / "known-issues.yaml"
ENTRY_KEYS = ("issue", "error", "cause", "solution", "versions", "probe", "requires")
REQUIRED_KEYS = ("issue", "error", "cause", "solution")
SIGNATURE_KEYS = ("regex",)
MIN_SUBSTRING = 8

_ISSUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BARE_EXCEPTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Warning|Exit|Interrupt|Traceback):?$")
_PACKAGE = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")


def collapse(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class Signature:
    """What an issue's failure text contains: a literal substring, or a regex."""

    pattern: str
    regex: bool = False

    def matches(self, text: str) -> bool:
        return self.matches_collapsed(collapse(text))

    def matches_collapsed(self, flat: str) -> bool:
        """matches() for text already collapsed (one collapse for every entry of a registry)."""
        if self.regex:
            return _bounded_search(self.pattern, flat)
        return collapse(self.pattern) in flat

    def as_yaml(self) -> str | dict[str, str]:
        return {"regex": self.pattern} if self.regex else self.pattern


MATCH_CHARS = 8192  # of the (collapsed) failure text a regex is searched in
MATCH_SECONDS = 1.0  # for one search, in the main thread
_overrun_said: set[str] = set()


class _Overrun(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Overrun


def bounded_text(flat: str) -> str:
    """The part of a failure text a regex is searched in: all of it up to MATCH_CHARS, else its
    first and last MATCH_CHARS / 2 (the exception is at one end of a traceback)."""
    if len(flat) <= MATCH_CHARS:
        return flat
    half = MATCH_CHARS // 2
    return flat[:half] + " ... " + flat[-half:]


def _bounded_search(pattern: str, flat: str) -> bool:
    """re.search on bounded_text, stopped after MATCH_SECONDS where a timer can stop it (the main
    thread: the regex engine checks for signals as it goes). A search stopped is no match."""
    compiled = re.compile(pattern)
    text = bounded_text(flat)
    if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer")
            or signal.getitimer(signal.ITIMER_REAL)[0]):  # someone else's timer runs: leave it be
        return compiled.search(text) is not None
    previous = signal.signal(signal.SIGALRM, _stop)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, MATCH_SECONDS)
            found = compiled.search(text) is not None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Overrun:
        if pattern not in _overrun_said:
            _overrun_said.add(pattern)
            print(f"compat-matrix: the registry regex {pattern!r} took over {MATCH_SECONDS:g} s on a failure "
                  f"text of {len(text)} characters and was stopped: it does not match there (simplify it)",
                  file=sys.stderr)
        return False
    finally:
        signal.signal(signal.SIGALRM, previous)
    return found


_SAMPLE = "".join(chr(i) for i in range(256)) + "\u00e9\u0394\u4e2d\u2028\u3000"
_ALL = frozenset(_SAMPLE)
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT")  # POSSESSIVE_REPEAT never backtracks into what it took


def backtracking_risk(pattern: str) -> str | None:
    """Why a search with the pattern can take exponential (or steep polynomial) time, or None.

    What makes Python's backtracking engine blow up is a text that can be split among the
    pattern's repeats in many ways: a quantifier inside a repeated group, repeated alternatives
    that can start the same way (or be empty), two adjacent open-ended repeats over shared
    characters. Each is refused here, on the parsed pattern."""
    try:
        from re import _compiler as sre_compile  # type: ignore[attr-defined]
        from re import _parser as sre_parse  # type: ignore[attr-defined]
    except ImportError:  # Python 3.10
        import sre_compile
        import sre_parse

    tree = sre_parse.parse(pattern)

    def chars(item: Any) -> frozenset[str]:
        """The characters (of a sample) one single-character item matches."""
        try:
            one = sre_compile.compile(sre_parse.SubPattern(tree.state, [item]))
        except Exception:  # noqa: BLE001 - any doubt: every character
            return _ALL
        return frozenset(ch for ch in _SAMPLE if one.fullmatch(ch))

    def first(seq: Any) -> tuple[frozenset[str], bool]:
        """(the characters a match of the sequence can start with, whether it can match empty)."""
        out: frozenset[str] = frozenset()
        for op, av in seq:
            f, empty = first_of(op, av)
            out |= f
            if not empty:
                return out, False
        return out, True

    def first_of(op: Any, av: Any) -> tuple[frozenset[str], bool]:
        n = str(op)
        if n in (*_REPEATS, "POSSESSIVE_REPEAT"):
            f, empty = first(av[2])
            return f, empty or av[0] == 0
        if n == "SUBPATTERN":
            return first(av[3])
        if n == "ATOMIC_GROUP":
            return first(av)
        if n == "BRANCH":
            out: frozenset[str] = frozenset()
            any_empty = False
            for alt in av[1]:
                f, empty = first(alt)
                out, any_empty = out | f, any_empty or empty
            return out, any_empty
        if n in ("AT", "ASSERT", "ASSERT_NOT"):
            return frozenset(), True
        if n in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):
            return chars((op, av)), False
        return _ALL, True  # a back-reference, a conditional: anything

    def inside(seq: Any) -> list[tuple[Any, Any]]:
        """Every item of the sequence, nested ones included, as (opcode, argument)."""
        out = []
        for op, av in seq:
            n = str(op)
            out.append((op, av))
            if n in (*_REPEATS, "POSSESSIVE_REPEAT"):
                out += inside(av[2])
            elif n == "SUBPATTERN":
                out += inside(av[3])
            elif n == "ATOMIC_GROUP":
                out += inside(av)
            elif n in ("ASSERT", "ASSERT_NOT"):
                out += inside(av[1])
            elif n == "BRANCH":
                for alt in av[1]:
                    out += inside(alt)
            elif n == "GROUPREF_EXISTS":
                out += inside(av[1]) + (inside(av[2]) if av[2] else [])
        return out

    def all_chars(seq: Any) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for op, av in inside(seq):
            if str(op) in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):
                out |= chars((op, av))
        return out

    def ambiguous(branch: Any) -> bool:
        seen: frozenset[str] = frozenset()
        for alt in branch[1]:
            f, empty = first(alt)
            if empty or f & seen:
                return True
            seen |= f
        return False

    def check(seq: Any) -> str | None:
        before: frozenset[str] | None = None  # what an open-ended repeat just before can take
        for op, av in seq:
            n = str(op)
            after: frozenset[str] | None = None
            if n in _REPEATS:
                low, high, body = av
                if high > 1:
                    for mop, bav in inside(body):
                        m = str(mop)
                        if m in _REPEATS and bav[0] != bav[1]:
                            return ("a quantifier inside a repeated group, like (a+)+ or (a*)*, "
                                    "which backtracks exponentially")
                        if m == "BRANCH" and ambiguous(bav):
                            return ("repeated alternatives that can match the same text (or nothing), "
                                    "like (a|aa)+ or (a|a?)+, which backtrack exponentially")
                if high != low:
                    took = all_chars(body)
                    if before is not None and before & took:
                        return ("two open-ended repeats side by side over the same characters, like \\s*\\s* "
                                "or .*.*, which backtrack polynomially")
                    after = took if high > 1000 else None
            if n in (*_REPEATS, "POSSESSIVE_REPEAT"):
                why = check(av[2])
            elif n == "SUBPATTERN":
                why = check(av[3])
            elif n == "ATOMIC_GROUP":
                why = check(av)
            elif n in ("ASSERT", "ASSERT_NOT"):
                why = check(av[1])
            elif n == "BRANCH":
                why = next((w for alt in av[1] if (w := check(alt))), None)
            else:
                why = None
            if why:
                return why
            before = after
        return None

    return check(tree.data)


@dataclass(frozen=True)
class Issue:
    name: str
    signature: Signature
    cause: str
    solution: str
    versions: tuple[str, ...] = ()
    probe: str | None = None
    # The tested fix: (package, version) pairs, as written.
    requires: tuple[tuple[str, str], ...] = ()

    @property
    def requires_dict(self) -> dict[str, str]:
        return dict(self.requires)


@dataclass(frozen=True)
class Registry:
    path: Path | None
    issues: tuple[Issue, ...] = ()
    # error text → the entry it matches: a sweep repeats the same failure text in many cells, and
    # the table, the guard and the advisor each ask again.
    _matched: dict[str, Issue | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    def match(self, error_text: str) -> Issue | None:
        """The first entry whose signature the text contains (file order decides ties)."""
        if not error_text:
            return None
        try:
            return self._matched[error_text]
        except KeyError:
            pass
        flat = collapse(error_text)
        issue = next((i for i in self.issues if i.signature.matches_collapsed(flat)), None)
        self._matched[error_text] = issue
        return issue

    def match_record(self, record: Record) -> Issue | None:
        """The issue a failing cell hit; None for passing cells and infra errors."""
        if not record.outcome.is_incompatibility:
            return None
        return self.match(record.error)

    def matches(self, records: Iterable[Record]) -> dict[str, Issue]:
        """cell id → issue, for the failing cells some entry matches (an `issue` column)."""
        out = {}
        for r in records:
            issue = self.match_record(r)
            if issue is not None:
                out[r.cell] = issue
        return out

    def get(self, name: str) -> Issue | None:
        return next((i for i in self.issues if i.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.issues)


def load(path: str | os.PathLike[str] = DEFAULT_PATH) -> Registry:
    """Read and validate a registry file. Raises ConfigError naming the file, the entry and the fix."""
    p = Path(path)
    return parse(read_text(p, "registry file", f"pass an existing file with --registry, or create {DEFAULT_PATH}"), p)


def parse(text: str, path: Path | None = None) -> Registry:
    file = str(path) if path else "<registry>"
    return Registry(path, _Validator(file).entries(load_yaml(text, file)))





class _Validator:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, problem: str, fix: str = "") -> ConfigError:
        return ConfigError(self.file, key, problem, fix)

    def entries(self, data: Any) -> tuple[Issue, ...]:
        if data is None:
            return ()  # an empty registry is valid: no issue logged yet
        if not isinstance(data, list):
            raise self.fail("(top level)", f"expected a list of entries, got {kind_of(data)}",
                            "start each entry with '- issue: NAME' (see registry/known-issues.yaml)")
        issues: list[Issue] = []
        where: dict[str, int] = {}
        for i, raw in enumerate(data):
            issue = self.entry(raw, f"[{i}]")
            if issue.name in where:
                raise self.fail(f"[{i}].issue",
                                f"duplicate issue name {issue.name!r} (also entry [{where[issue.name]}])",
                                "give each entry its own name, or merge the two")
            where[issue.name] = i
            issues.append(issue)
        return tuple(issues)

    def entry(self, raw: Any, key: str) -> Issue:
        if not isinstance(raw, dict):
            raise self.fail(key, f"expected a mapping (issue, error, cause, solution, …), got {kind_of(raw)}")
        for k in raw:
            if not isinstance(k, str) or k not in ENTRY_KEYS:
                raise self.fail(f"{key}.{k}", "unknown key", did_you_mean(str(k), ENTRY_KEYS))
        for required in REQUIRED_KEYS:
            if required not in raw:
                raise self.fail(f"{key}.{required}", "missing",
                                f"every entry needs {', '.join(REQUIRED_KEYS)} (the seed guide's shape)")
        name = self.text(raw["issue"], f"{key}.issue")
        if not _ISSUE_NAME.match(name):
            raise self.fail(f"{key}.issue", f"{name!r} is not a usable name",
                            "use letters, digits, '.', '_' and '-', e.g. numpy_scipy_incompatibility")
        solution = self.text(raw["solution"], f"{key}.solution")
        probe = raw.get("probe")
        if probe is not None:
            probe = self.text(probe, f"{key}.probe")
            try:
                compile(probe, f"<probe of {name}>", "exec")
            except SyntaxError as e:
                raise self.fail(f"{key}.probe", f"not valid Python ({e.msg}, line {e.lineno})",
                                'give a snippet such as "import scipy.stats"') from None
        requires = (self.requires(raw["requires"], f"{key}.requires") if "requires" in raw
                    else tuple(_install_pins(solution).items()))
        return Issue(
            name=name,
            signature=self.signature(raw["error"], f"{key}.error"),
            cause=self.text(raw["cause"], f"{key}.cause"),
            solution=solution,
            versions=self.versions(raw.get("versions", []), f"{key}.versions"),
            probe=probe,
            requires=requires,
        )

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {kind_of(value)}")
        return value.strip()

    def signature(self, value: Any, key: str) -> Signature:
        if isinstance(value, dict):
            for k in value:
                if k not in SIGNATURE_KEYS:
                    raise self.fail(f"{key}.{k}", "unknown key", did_you_mean(str(k), SIGNATURE_KEYS))
            if "regex" not in value:
                raise self.fail(key, "a mapping signature needs regex:", 'write error: {regex: "dtype size changed"}')
            pattern = value["regex"]
            if not isinstance(pattern, str) or not pattern:
                raise self.fail(f"{key}.regex", f"expected a non-empty string, got {kind_of(pattern)}")
            try:
                compiled = re.compile(pattern)
            except re.error as e:
                raise self.fail(f"{key}.regex", f"not a valid regular expression ({e})",
                                "escape special characters (\\. \\( \\[), "
                                'or use a plain substring: error: "text"') from None
            if compiled.search("") is not None:
                raise self.fail(f"{key}.regex", f"{pattern!r} matches the empty string, so every failure",
                                "make it require some text, e.g. dtype size changed")
            risk = backtracking_risk(pattern)
            if risk:
                raise self.fail(f"{key}.regex", f"{pattern!r} holds {risk}: a long failure text could take it "
                                "hours to search", "repeat single characters or fixed text only, e.g. "
                                "(?:ab)+ or [a-z]+ instead of (a+)+; or use a plain substring: error: \"text\"")
            return Signature(pattern, regex=True)
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string or {{regex: ...}}, got {kind_of(value)}",
                            'quote it: error: "numpy.dtype size changed"')
        text = collapse(value)
        if "\n" in value.strip():
            raise self.fail(key, "a substring signature spans several lines",
                            "give one line of the error; for more, use {regex: ...}")
        if len(text) < MIN_SUBSTRING or _BARE_EXCEPTION.match(text):
            raise self.fail(key, f"{value!r} is too generic: it would match unrelated failures",
                            "give the distinctive part of the message, e.g. \"numpy.dtype size changed\"")
        return Signature(text)

    def versions(self, value: Any, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of image versions, got {kind_of(value)}",
                            "e.g. versions: [v74.3, v76]")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                raise self.fail(f"{key}[{i}]", f"{item!r} was read as a number",
                                f'quote it: "{item}" (YAML turns 74.30 into 74.3)')
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"{key}[{i}]", f"expected a non-empty string, got {kind_of(item)}")
            out.append(item.strip())
        return tuple(out)

    def requires(self, value: Any, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict) or not value:
            raise self.fail(key, f"expected a mapping of package to version, got {kind_of(value)}",
                            'e.g. requires: {numpy: "1.24.3", scipy: "1.10.1"}')
        seen: dict[str, str] = {}
        out = []
        for name, version in value.items():
            k = f"{key}.{name}"
            if not isinstance(name, str) or not _PACKAGE.match(name):
                raise self.fail(k, f"{name!r} is not a package name (PEP 508)", "use the distribution name")
            if evidence.canon(name) in seen:
                raise self.fail(k, f"same package as {seen[evidence.canon(name)]!r}", "keep one of the two")
            seen[evidence.canon(name)] = name
            if isinstance(version, float):
                raise self.fail(k, f"{version!r} was read as a number",
                                f'quote it: "{version}" (YAML reads 1.10 as 1.1)')
            if not isinstance(version, str):
                raise self.fail(k, f"expected a version string, got {kind_of(version)}", 'e.g. "1.24.3"')
            try:
                Version(version)
            except InvalidVersion:
                raise self.fail(k, f"{version!r} is not a plain version",
                                'give the exact version, e.g. "1.24.3"') from None
            out.append((name, version))
        return tuple(out)


# Variable parts of failure text, most specific first: the same failure in different cells differs
# only in these (paths, addresses, versions, sizes).
_NORMALISE = [
    (re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@+-]+){2,}[\\/]?"), "<path>"),
    (re.compile(r"\b0x[0-9A-Fa-f]+\b"), "<hex>"),
    (re.compile(r"\b[0-9a-f]{12,}\b"), "<hex>"),
    (re.compile(r"(?<![\w.])v?\d+(?:\.\d+)+(?:[a-z]+\d*)?(?:\.(?:post|dev)\d+)?(?!\w|\.\d)"), "<v>"),
    (re.compile(r"(?<![\w<])\d+(?![\w>])"), "<n>"),
]


def normalise_signature(error_text: str) -> str:
    """The failure text with its variable parts replaced, so one failure groups across cells.

    "… Expected 96 from C header, got 88 from PyObject" and "… Expected 80 …, got 72 …" both become
    "… Expected <n> from C header, got <n> from PyObject"; pins and paths likewise.
    """
    text = collapse(error_text)
    for pattern, placeholder in _NORMALISE:
        text = pattern.sub(placeholder, text)
    return text


@dataclass(frozen=True)
class UnmatchedGroup:
    """Failing cells no registry entry explains, sharing one normalised signature."""

    signature: str
    outcome: Outcome
    records: tuple[Record, ...]

    @property
    def example(self) -> str:
        return self.records[0].error


def group_unmatched(records: Iterable[Record], registry: Registry | None = None) -> list[UnmatchedGroup]:
    """Failing cells no entry matches, grouped by outcome and normalised signature; biggest first."""
    reg = registry or Registry(None)
    groups: dict[tuple[Outcome, str], list[Record]] = {}
    normalised: dict[str, str] = {}  # the same failure text recurs across cells
    for r in records:
        if r.outcome.is_incompatibility and reg.match_record(r) is None:
            if (sig := normalised.get(r.error)) is None:
                sig = normalised[r.error] = normalise_signature(r.error)
            groups.setdefault((r.outcome, sig), []).append(r)
    out = [UnmatchedGroup(sig, outcome, tuple(sorted(rs, key=lambda r: r.cell)))
           for (outcome, sig), rs in groups.items()]
    return sorted(out, key=lambda g: (-len(g.records), g.outcome.value, g.signature))


_EXCEPTION_START = re.compile(r"\b[A-Z][A-Za-z0-9_]*(?:Error|Exception|Warning): ")


_PLACEHOLDER = re.compile(r"<(?:path|hex|v|n)>")


def _suggested_signature(group: UnmatchedGroup) -> Signature:
    """A signature that matches every cell of the group: a readable substring when one is distinctive."""
    # From the exception name on, when there is one: what precedes it (the probe, the check) varies.
    exc = _EXCEPTION_START.search(group.signature)
    tail = group.signature[exc.start():] if exc else group.signature
    best = max(_PLACEHOLDER.split(tail), key=len).strip(" ,.:;(")
    literal_chars = len(_PLACEHOLDER.sub("", tail))
    candidates = []
    # A substring only when it is most of the message: "we can conclude that your requirements are
    # unsatisfiable" alone would match every unsatisfiable install, whatever the package.
    if len(best) >= MIN_SUBSTRING and not _BARE_EXCEPTION.match(best) and 3 * len(best) >= 2 * literal_chars:
        candidates.append(Signature(best))
    literal = re.split(r"(<(?:path|hex|v|n)>)", tail)
    wild = {"<path>": r"\S+", "<hex>": r"[0-9A-Fa-fx]+", "<v>": r"v?[0-9][0-9A-Za-z.]*", "<n>": r"[0-9]+"}
    # re.escape escapes spaces too (for verbose mode); the pattern reads better without.
    escaped = "".join(wild.get(p, re.escape(p).replace("\\ ", " ")) for p in literal)
    candidates.append(Signature(escaped, regex=True))
    errors = {r.error: None for r in group.records}  # each distinct failure text once
    for sig in candidates:
        if all(sig.matches(e) for e in errors):
            return sig
    return candidates[-1]


_STOPWORDS = {"a", "an", "and", "are", "because", "can", "error", "for", "from", "has", "in", "is", "of",
              "that", "the", "to", "we", "with", "you", "your"}


def _suggested_name(group: UnmatchedGroup) -> str:
    exc = _EXCEPTION_START.search(group.signature)
    text = _PLACEHOLDER.sub(" ", group.signature[exc.end():] if exc else group.signature)
    words = [w for w in re.findall(r"[a-z][a-z0-9]*", text.lower()) if w not in _STOPWORDS]
    return "_".join([*words[:5]] or [group.outcome.value.replace("-", "_")])


def _pins_seen(records: Iterable[Record], order: Iterable[str]) -> dict[str, list[str]]:
    """Each package's versions across the records, sorted: evidence.pin_of for every record, with
    each spelling of a name canonicalised once rather than once per record."""
    canon: dict[str, str] = {}
    out = {}
    for p in order:
        key = evidence.canon(p)
        versions = set()
        for r in records:
            for n, v in r.pins.items():
                if (canon.get(n) or canon.setdefault(n, evidence.canon(n))) == key:
                    if v:
                        versions.add(v)
                    break
        out[p] = sorted(versions, key=evidence.version_key)
    return out


def suggest_entry(group: UnmatchedGroup, registry: Registry | None = None) -> str:
    """A registry entry for an unmatched group, as YAML to paste into known-issues.yaml."""
    sig = _suggested_signature(group)
    name = _suggested_name(group)
    taken = set(registry.names) if registry else set()
    base_name, n = name, 2
    while name in taken:
        name, n = f"{base_name}_{n}", n + 1
    order = evidence.package_order(group.records)
    seen_pins = _pins_seen(group.records, order)
    places = sorted({f"{r.base}·{r.mode}" for r in group.records})
    cells = [r.cell for r in group.records]
    shown = ", ".join(cells[:6]) + (f", … ({len(cells) - 6} more)" if len(cells) > 6 else "")
    runs = sorted({r.run_id for r in group.records if r.run_id})
    entry: dict[str, Any] = {
        "issue": name,
        "error": sig.as_yaml(),
        "cause": "TODO: why this fails",
        "solution": "TODO: the tested fix, e.g. pip install a==1.0 b==2.0",
        "versions": [],
    }
    header = [
        f"# {group.outcome.value} in {len(cells)} cell(s){' (run ' + ', '.join(runs) + ')' if runs else ''}: {shown}",
        f"# seen on {', '.join(places)}; pins: "
        + "; ".join(f"{p} {', '.join(vs)}" for p, vs in seen_pins.items() if vs),
        f"# example: {collapse(group.example)[:300]}",
    ]
    import yaml

    body = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, width=1000, default_flow_style=None)
    return "\n".join(header) + "\n" + body


def _install_pins(command: str) -> dict[str, str]:
    # Here, not at the top: the command parser (packaging's requirements) is needed only for
    # entries whose solution is a command, and a re-run that writes nothing needs none of it.
    from matrix.registry import pipcmd

    return pipcmd.install_pins(command)


def annotate(registry: Registry, records: Iterable[Record]) -> report.Annotations:
    """What the registry says about a table's records, as the report shows it: each failing cell's
    issue, each issue's fix, and entries to paste for the failures no entry matches."""
    from matrix import report  # here: the table writer loads pandas, which a run that writes no table skips

    records = list(records)
    hits = registry.matches(records)
    return report.Annotations(issues={cell: issue.name for cell, issue in hits.items()},
                       fixes={i.name: i.solution for i in registry.issues},
                       new_entries=[suggest_entry(g, registry) for g in group_unmatched(records, registry)],
                       registry_path=str(registry.path) if registry.path else "the registry")
