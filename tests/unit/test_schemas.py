"""The JSON Schemas agree with the validators (jsonschema, draft 2020-12).

- Every example the README and the repository hold validates against its schema.
- Every document the other unit tests gave a validator (tests/unit/schema_harvest.py records them
  in this session; conftest.py runs this module last): accepted by the validator → accepted by the
  schema; refused by the validator → refused by the schema, unless the refusal is one of
  DIFFERENCES below, each with why a schema cannot say it.
- The keys, modes and picks the schemas name are the validators' own.

Run alone (or with only some of the unit tests), it runs the whole unit suite once in a subprocess to
gather the documents.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import matrix.registry as registry
from matrix import spec
from matrix.registry import schema
from tests.unit import schema_harvest

REPO = Path(__file__).resolve().parents[2]
UNIT = Path(__file__).resolve().parent

# (schema, the ConfigError's key (regex, searched), its problem (regex, searched), why the schema lets it pass)
DIFFERENCES: list[tuple[str, str, str, str]] = [
    ("matrix", r"timeout_s$", r"got nan$",
     "YAML's .nan: NaN compares with no bound, so no range keyword refuses it (JSON itself has no NaN)"),
    ("matrix", r"\.spec$", r"is not a version specifier",
     "a specifier's grammar (operators, wildcards, several clauses) is packaging's; the schema checks a string"),
    ("matrix", r"^(exclude|include)\[\d+\]\.base$", r"^unknown base ",
     "exclude/include name bases: a schema cannot compare a value with another mapping's keys"),
    ("matrix", r"^exclude\[\d+\]\.", r"is not among the versions of",
     "the same: an exclude's pin against the versions the packages section lists"),
    ("matrix", r"^(exclude|include)\[\d+\]\.", r"^unknown key$",
     "exclude/include take the packages' names as keys: a schema cannot take property names from another mapping"),
    ("matrix", r"^include\[\d+\]$", r"names no package pin",
     "which of an include's keys are package names depends on the packages section"),
    ("matrix", r"^include\[\d+\]\.mode$", r"is not in modes", "an include's mode against the modes list"),
    ("matrix", r"^layered_order\[\d+\]$", r"is not in packages", "layered_order against the packages' names"),
    ("matrix", r"^(packages|layered_order)", r"same package as|is listed twice",
     "names compared as PEP 503 canonical names: no schema keyword normalises them"),
    ("matrix", r"find_links\[\d+\]$|ca_bundle$|\.dockerfile$", r"is not a directory on this machine|is not a file",
     "what exists on this machine's file system"),
    ("matrix", r"memory$", r"below Docker's smallest limit|more than the engine can take",
     "the size in bytes (6m up to 2^63): a pattern checks the form, not the amount"),
    ("registry", r"\.issue$", r"^duplicate issue name",
     "one field unique across entries: uniqueItems compares whole entries"),
    ("registry", r"\.regex$",
     r"not a valid regular expression|matches the empty string"
     r"|holds (a quantifier|repeated alternatives|two open-ended)",
     "what a regex means is Python's re and the registry's backtracking analysis"),
    ("registry", r"\.probe$", r"not valid Python", "compile() of the snippet"),
    ("registry", r"\.error$", r"is too generic",
     "the length counted after whitespace runs collapse; the schema counts the raw string"),
]


def validators() -> dict[str, jsonschema.protocols.Validator]:
    out = {}
    for name in schema.NAMES:
        data = schema.load(name)
        jsonschema.Draft202012Validator.check_schema(data)
        out[name] = jsonschema.Draft202012Validator(data)
    return out


def listed_difference(kind: str, key: str, problem: str) -> str | None:
    for k, key_re, problem_re, why in DIFFERENCES:
        if k == kind and re.search(key_re, key) and re.search(problem_re, problem):
            return why
    return None


def test_the_schemas_are_shipped_and_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from matrix import cli

    for name in schema.NAMES:
        assert cli.main(["schema", name]) == 0
        assert capsys.readouterr().out == (REPO / "matrix" / "registry" / "schemas" / f"{name}.json").read_text()
    validators()


def test_the_schemas_name_the_validators_keys_modes_and_picks() -> None:
    m, r = schema.load("matrix"), schema.load("registry")
    assert set(m["properties"]) == set(spec.TOP_KEYS)
    assert set(m["required"]) == {"bases", "packages"}
    assert set(m["$defs"]["base"]["properties"]) == set(spec.BASE_KEYS)
    assert set(m["properties"]["install"]["properties"]) == set(spec.INSTALL_KEYS)
    assert set(m["properties"]["limits"]["properties"]) == set(spec.LIMIT_KEYS)
    assert set(m["$defs"]["query"]["properties"]) == set(spec.QUERY_KEYS)
    assert set(m["$defs"]["query"]["properties"]["pick"]["enum"]) == set(spec.PICKS)
    for where in (m["properties"]["modes"]["items"], m["properties"]["exclude"]["items"]["properties"]["mode"],
                  m["properties"]["include"]["items"]["properties"]["mode"]):
        assert set(where["enum"]) == set(spec.MODES)
    assert m["properties"]["limits"]["properties"]["timeout_s"]["maximum"] == spec.MAX_TIMEOUT_S
    entry = r["$defs"]["entry"]
    assert set(entry["properties"]) == set(registry.ENTRY_KEYS)
    assert set(entry["required"]) == set(registry.REQUIRED_KEYS)
    assert entry["properties"]["error"]["oneOf"][0]["minLength"] == registry.MIN_SUBSTRING


def readme_yaml_blocks() -> list[Any]:
    text = (REPO / "README.md").read_text()
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def test_every_example_in_the_readme_and_the_repository_is_valid() -> None:
    v = validators()
    matrices = [d for d in readme_yaml_blocks() if isinstance(d, dict) and "bases" in d]
    assert matrices, "the README's matrix example is gone"
    matrices.append(yaml.safe_load((REPO / "matrix.yaml").read_text()))
    for d in matrices:
        assert not list(v["matrix"].iter_errors(d))
    registries = [yaml.safe_load((REPO / "registry" / "known-issues.yaml").read_text())]
    # the entry the registry module documents, in its docstring
    doc = registry.__doc__ or ""
    example = doc[doc.index("    - issue:"):doc.index("\n\n", doc.index("    - issue:"))]
    registries.append(yaml.safe_load(re.sub(r"\s+#.*", "", example)))
    assert registries[-1][0]["requires"] == {"numpy": "1.24.3", "scipy": "1.10.1"}
    for d in registries:
        assert not list(v["registry"].iter_errors(d))
        registry.parse(yaml.safe_dump(d))  # and the validator agrees


def harvested(session_items: list[pytest.Item]) -> list[tuple[str, Any, tuple[str, str] | None]]:
    """The documents this session's other tests gave the validators, or, when this session did not
    run every unit test module, those of the whole unit suite run once in a subprocess."""
    ran = {item.path.name for item in session_items}
    wanted = {p.name for p in UNIT.glob("test_*.py")} - {Path(__file__).name}
    if wanted <= ran:
        return list(schema_harvest.SEEN)
    fd, name = tempfile.mkstemp(prefix="compat-matrix-schema-harvest-")
    os.close(fd)
    out = Path(name)
    out.unlink()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(UNIT),
             f"--ignore={__file__}"], cwd=REPO, capture_output=True, text=True, timeout=900,
            env=dict(os.environ, COMPAT_MATRIX_SCHEMA_HARVEST=str(out)))
        assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
        with open(out, "rb") as f:
            return list(pickle.load(f))
    finally:
        out.unlink(missing_ok=True)


def test_the_schemas_agree_with_the_validators_on_every_document_the_tests_hold(request: pytest.FixtureRequest) -> None:
    v = validators()
    seen = harvested(request.session.items)
    assert sum(1 for kind, _, err in seen if kind == "matrix" and err is None) >= 50
    assert sum(1 for kind, _, err in seen if kind == "registry" and err is not None) >= 20
    accepted_refused, refused_accepted, differences = [], [], set()
    for kind, data, err in seen:
        ok = v[kind].is_valid(data)
        if err is None and not ok:
            accepted_refused.append((kind, data, [e.message for e in v[kind].iter_errors(data)][:3]))
        elif err is not None and ok:
            why = listed_difference(kind, *err)
            if why is None:
                refused_accepted.append((kind, err, data))
            else:
                differences.add(why)
    assert not accepted_refused, f"the validator accepts, the schema refuses: {accepted_refused[:5]}"
    assert not refused_accepted, f"the validator refuses, the schema accepts (unlisted): {refused_accepted[:5]}"
    # The listed differences are real ones, met by the tests' own documents (not a list of excuses).
    assert len(differences) >= len(DIFFERENCES) // 2
