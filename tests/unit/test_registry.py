"""The known-issue registry: loading, validation (exit 2), matching, grouping and suggested entries."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from matrix import registry
from matrix.errors import EXIT_CONFIG, ConfigError
from matrix.store import Outcome
from tests.unit import real_cells

REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"

ENTRY = """
- issue: numpy_scipy_incompatibility
  error: "numpy.dtype size changed"
  cause: "Binary incompatibility between NumPy and SciPy versions"
  solution: "pip install numpy==1.24.3 scipy==1.10.1"
  versions: [v74.3, v76]
  probe: "import scipy.stats"
"""


def load_text(tmp_path: Path, text: str) -> registry.Registry:
    p = tmp_path / "known-issues.yaml"
    p.write_text(textwrap.dedent(text))
    return registry.load(p)


def test_the_seeded_registry_holds_the_seed_guides_entry() -> None:
    reg = registry.load(REPO_REGISTRY)
    issue = reg.get("numpy_scipy_incompatibility")
    assert issue is not None
    assert issue.signature == registry.Signature("numpy.dtype size changed")
    assert issue.versions == ("v74.3", "v76")
    assert issue.probe == "import scipy.stats"
    # No `requires:` written: the tested fix is read from the pip command in `solution`.
    assert issue.requires_dict == {"numpy": "1.24.3", "scipy": "1.10.1"}


def test_the_real_dtype_failure_matches_and_the_other_failures_do_not() -> None:
    reg = registry.load(REPO_REGISTRY)
    by_outcome = {r.outcome: r for r in real_cells.bookworm()}
    assert reg.match_record(by_outcome[Outcome.IMPORT_ERROR]).name == "numpy_scipy_incompatibility"
    assert reg.match_record(by_outcome[Outcome.RESOLVE_CONFLICT]) is None
    assert reg.match_record(by_outcome[Outcome.NO_WHEEL]) is None
    assert reg.match_record(by_outcome[Outcome.PASS]) is None


def test_an_infra_error_is_never_matched_even_with_a_known_signature() -> None:
    reg = registry.load(REPO_REGISTRY)
    dtype = next(r for r in real_cells.bookworm() if r.outcome is Outcome.IMPORT_ERROR)
    assert reg.match_record(dataclasses.replace(dtype, outcome=Outcome.INFRA_ERROR)) is None
    assert reg.match_record(dataclasses.replace(dtype, outcome=Outcome.WARN)) is None


def test_the_seed_guides_own_signature_matches_across_wrapped_lines(tmp_path: Path) -> None:
    reg = load_text(tmp_path, ENTRY.replace('"numpy.dtype size changed"', '"ValueError: numpy.dtype size changed"'))
    wrapped = "Traceback (most recent call last):\n  ...\nValueError:  numpy.dtype\n size changed, may indicate"
    assert reg.match(wrapped) is not None
    assert reg.match("valueerror: NUMPY.DTYPE SIZE CHANGED") is None  # substrings are case-sensitive


def test_a_regex_signature_is_searched(tmp_path: Path) -> None:
    reg = load_text(tmp_path, ENTRY.replace('"numpy.dtype size changed"',
                                            '{regex: "dtype size changed.*Expected \\\\d+ from C header"}'))
    assert reg.issues[0].signature.regex
    assert reg.match(real_cells.DTYPE) is not None
    assert reg.match("numpy.dtype size changed, nothing else") is None


def test_the_first_matching_entry_wins(tmp_path: Path) -> None:
    reg = load_text(tmp_path, ENTRY + """
- issue: any_binary_incompatibility
  error: "binary incompatibility"
  cause: "an ABI mismatch"
  solution: "rebuild"
""")
    assert reg.match(real_cells.DTYPE).name == "numpy_scipy_incompatibility"
    assert reg.match("something: binary incompatibility here").name == "any_binary_incompatibility"


def test_explicit_requires_win_and_a_chained_solution_is_read(tmp_path: Path) -> None:
    reg = load_text(tmp_path, """
- issue: explicit
  error: "numpy.dtype size changed"
  cause: "ABI"
  solution: "pin numpy below 2 and rebuild scipy"
  requires: {numpy: "1.26.4", scipy: "1.11.4"}
- issue: chained
  error: "A module that was compiled using NumPy 1.x"
  cause: "ABI"
  solution: "pip uninstall -y numpy scipy && pip install --no-cache-dir numpy==1.24.3 scipy==1.10.1"
- issue: prose
  error: "_ARRAY_API not found"
  cause: "ABI"
  solution: "rebuild the extension against NumPy 2"
""")
    assert reg.get("explicit").requires_dict == {"numpy": "1.26.4", "scipy": "1.11.4"}
    assert reg.get("chained").requires_dict == {"numpy": "1.24.3", "scipy": "1.10.1"}
    assert reg.get("prose").requires == ()


def test_an_empty_registry_is_valid(tmp_path: Path) -> None:
    assert load_text(tmp_path, "# nothing logged yet\n").issues == ()


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        (ENTRY.replace("  error:", "  eror:"), "[0].eror", "did you mean 'error'"),
        (ENTRY.replace('  cause: "Binary incompatibility between NumPy and SciPy versions"\n', ""),
         "[0].cause", "missing"),
        (ENTRY.replace('"Binary incompatibility between NumPy and SciPy versions"', "42"), "[0].cause",
         "non-empty string"),
        (ENTRY + ENTRY, "[1].issue", "duplicate issue name"),
        (ENTRY.replace('"numpy.dtype size changed"', '"Error"'), "[0].error", "too generic"),
        (ENTRY.replace('"numpy.dtype size changed"', '"ValueError:"'), "[0].error", "too generic"),
        (ENTRY.replace('"numpy.dtype size changed"', '{regex: "dtype (size"}'), "[0].error.regex",
         "not a valid regular expression"),
        (ENTRY.replace('"numpy.dtype size changed"', '{regex: ".*"}'), "[0].error.regex", "empty string"),
        (ENTRY.replace('"numpy.dtype size changed"', '{regexp: "dtype size"}'), "[0].error.regexp",
         "did you mean 'regex'"),
        (ENTRY.replace('"numpy.dtype size changed"', "[dtype]"), "[0].error", "expected a string or"),
        (ENTRY.replace("[v74.3, v76]", "[74.3, v76]"), "[0].versions[0]", "read as a number"),
        (ENTRY + '  requires: {numpy: 1.10}\n', "[0].requires.numpy", "read as a number"),
        (ENTRY + '  requires: {numpy: "1.24.3; rm -rf /"}\n', "[0].requires.numpy", "not a plain version"),
        (ENTRY.replace('"import scipy.stats"', '"import scipy.stats("'), "[0].probe", "not valid Python"),
        (ENTRY.replace("numpy_scipy_incompatibility", "numpy scipy"), "[0].issue", "not a usable name"),
        ("issue: x\nerror: y\n", "(top level)", "expected a list of entries"),
        (ENTRY + '  cause: "again"\n', "", "duplicate key 'cause'"),
    ],
)
def test_bad_entries_name_the_file_the_key_and_exit_2(tmp_path: Path, text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text)
    assert err.value.exit_code == EXIT_CONFIG
    assert err.value.file.endswith("known-issues.yaml")
    if key:
        assert err.value.key == key
    assert says in str(err.value)


def test_python_tags_are_refused(tmp_path: Path) -> None:
    text = ENTRY.replace('"import scipy.stats"', '!!python/object/apply:os.system ["echo pwned"]')
    with pytest.raises(ConfigError, match="!!python/ tag is refused"):
        load_text(tmp_path, text)


def test_a_missing_registry_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such registry file") as err:
        registry.load(tmp_path / "nope.yaml")
    assert err.value.exit_code == EXIT_CONFIG


def test_normalise_groups_the_same_failure_across_cells() -> None:
    head = "ValueError: numpy.dtype size changed, may indicate binary incompatibility."
    a = head + " Expected 96 from C header, got 88 from PyObject"
    b = head + " Expected 80 from C header, got 72 from PyObject"
    assert registry.normalise_signature(a) == registry.normalise_signature(b)
    assert "Expected <n> from C header, got <n> from PyObject" in registry.normalise_signature(a)
    # Real resolver refusals differing only in versions.
    c = registry.normalise_signature(real_cells.CONFLICT)
    assert c == registry.normalise_signature(real_cells.CONFLICT.replace("2.2.6", "2.0.2"))
    assert c != registry.normalise_signature(real_cells.NO_WHEEL)
    paths = ("ImportError: cannot import name 'Inf' from 'numpy' "
             "(/opt/compat-matrix/venv/lib/python3.11/site-packages/numpy/__init__.py)")
    assert registry.normalise_signature(paths) == "ImportError: cannot import name 'Inf' from 'numpy' (<path>)"


def test_unmatched_failures_group_by_signature_and_infra_errors_never_count() -> None:
    reg = registry.load(REPO_REGISTRY)
    records = real_cells.bookworm()
    dtype = next(r for r in records if r.outcome is Outcome.IMPORT_ERROR)
    records.append(dataclasses.replace(dtype, cell="other", outcome=Outcome.INFRA_ERROR, error="daemon gone"))
    groups = registry.group_unmatched(records, reg)
    assert {g.outcome for g in groups} == {Outcome.RESOLVE_CONFLICT, Outcome.NO_WHEEL}
    assert all(len(g.records) == 1 for g in groups)
    # Without a registry the dtype failure is unmatched too.
    assert len(registry.group_unmatched(records)) == 3


def test_the_venv_sweeps_unmatched_failures_form_three_groups() -> None:
    reg = registry.load(REPO_REGISTRY)
    groups = registry.group_unmatched(real_cells.venv_sweep(), reg)
    assert [(g.outcome.value, len(g.records)) for g in groups] == [
        ("no-wheel", 17), ("no-wheel", 17), ("resolve-conflict", 10)]


@pytest.mark.parametrize("source", ["bookworm", "venv_sweep"])
def test_a_suggested_entry_pastes_into_the_registry_and_matches_its_group(tmp_path: Path, source: str) -> None:
    records = getattr(real_cells, source)()
    reg = registry.load(REPO_REGISTRY)
    groups = registry.group_unmatched(records, reg)
    assert groups
    for group in groups:
        snippet = registry.suggest_entry(group, reg)
        assert group.records[0].cell in snippet and "TODO" in snippet
        pasted = load_text(tmp_path, REPO_REGISTRY.read_text() + "\n" + snippet)
        new = pasted.issues[-1]
        assert new.name not in reg.names
        assert all(pasted.match_record(r) == new for r in group.records)
        # A suggestion matches its own failure, not every failure of the sweep.
        others = [r for r in records if r.outcome.is_incompatibility and r not in group.records]
        assert not any(new.signature.matches(r.error) for r in others)


def test_the_dtype_suggestion_is_a_readable_substring() -> None:
    [group] = [g for g in registry.group_unmatched(real_cells.bookworm()) if g.outcome is Outcome.IMPORT_ERROR]
    snippet = registry.suggest_entry(group)
    assert 'error: "ValueError: numpy.dtype size changed, may indicate binary incompatibility. Expected"' in snippet \
        or "error: 'ValueError: numpy.dtype size changed, may indicate binary incompatibility. Expected'" in snippet


def regex_entry(pattern: str) -> str:
    return ENTRY.replace('"numpy.dtype size changed"', "{regex: " + json.dumps(pattern) + "}")


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a*)*b", "(x+x+)+y", "(a|aa)+$", "(a|b|ab)*c", "(?:a?){25}a{25}",
                                     r"x(\s?)+$", r"x\s*\s*$", ".*.*=.*", r"(.*a){12}", r"^(\w+\s?)+!$"])
def test_a_regex_that_can_backtrack_catastrophically_is_refused_at_load(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, regex_entry(pattern))
    assert err.value.key == "[0].error.regex" and err.value.exit_code == EXIT_CONFIG
    assert "backtrack" in err.value.problem and repr(pattern) in err.value.problem


@pytest.mark.parametrize("pattern", [r"dtype size changed.*Expected \d+ from C header", "(?:ab|cd)+x", "[ab]+c",
                                     r"(\w|\d)+!", r"\d+\.\d+", r"\d+[a-z]+", "(?:numpy|scipy) [0-9]+", "a++b",
                                     r"x(?:a+)?y", r"(?i)undefined symbol: \S+"])
def test_ordinary_regexes_load(tmp_path: Path, pattern: str) -> None:
    assert load_text(tmp_path, regex_entry(pattern)).issues[0].signature == registry.Signature(pattern, regex=True)


def test_suggested_regexes_pass_the_load_time_check() -> None:
    wild = [r"\S+", r"[0-9A-Fa-fx]+", r"v?[0-9][0-9A-Za-z.]*", r"[0-9]+"]
    for a in wild:
        for b in wild:
            assert registry.backtracking_risk(f"Error: {a} from {b}, got {a}") is None


# A regex the load-time check lets through, but polynomial (n^4) on a text of many x's.
SLOW = ".*x.*x.*x.*y"

SEARCH = """
import sys, time
from matrix import registry
from matrix.classify import Outcome
from matrix.store import Record
reg = registry.Registry(None, (registry.Issue("slow", registry.Signature(sys.argv[1], regex=True), "c", "s"),))
records = [Record(cell=f"c{i}", base="b", mode="together", pins={}, outcome=Outcome.IMPORT_ERROR,
                  error=sys.argv[3] * int(sys.argv[2]) + f"!{i}") for i in range(3)]
start = time.monotonic()
print(reg.matches(records), round(time.monotonic() - start, 1))
"""


def test_no_regex_can_hang_the_matching_of_a_run(tmp_path: Path) -> None:
    assert registry.backtracking_risk(SLOW) is None and registry.backtracking_risk("(a+)+$") is not None
    for pattern, char in ((SLOW, "x"), ("(a+)+$", "a")):
        # In a process of its own, bounded by the test: three cells with a 100 000-character error.
        done = subprocess.run([sys.executable, "-c", SEARCH, pattern, "100000", char], capture_output=True,
                              text=True, timeout=60, check=True, env=os.environ.copy())
        found, seconds = done.stdout.split()
        assert found == "{}" and float(seconds) < 10, done.stdout
        # Said once per regex, with what to do.
        assert done.stderr.count(f"the registry regex {pattern!r} took over 1 s") == 1, done.stderr
        assert "does not match there (simplify it)" in done.stderr


def test_a_regex_is_searched_in_both_ends_of_a_long_text() -> None:
    sig = registry.Signature(r"ValueError: numpy\.dtype size \w+", regex=True)
    traceback = ("Traceback (most recent call last): " + "File x, line 1 " * 5000
                 + "ValueError: numpy.dtype size changed")
    assert len(traceback) > registry.MATCH_CHARS and sig.matches(traceback)
    assert registry.Signature(r"^Traceback \(most", regex=True).matches(traceback)
    assert not registry.Signature(r"line 1 File x, line 1 File y", regex=True).matches(traceback)
    assert len(registry.bounded_text("a" * 10**6)) == registry.MATCH_CHARS + len(" ... ")


def test_regexes_matched_off_the_main_thread_are_bounded_by_length(tmp_path: Path) -> None:
    import threading

    reg = load_text(tmp_path, regex_entry(r"(?:ab|cd)+x"))
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(reg.match("ab" * 10**6 + "x" + "cd" * 10**6)))
    worker.start()
    worker.join(60)
    assert not worker.is_alive() and out == [None]  # the x is past what is searched
