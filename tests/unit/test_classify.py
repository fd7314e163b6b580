"""Classification from recorded installer and probe output (recorded from real runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matrix.classify import Outcome, classify_install, classify_probe, classify_probes

DATA = Path(__file__).parent / "data"


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_resolver_refusal_is_resolve_conflict_with_the_reason() -> None:
    v = classify_install((DATA / "pip-resolution-impossible.log").read_text())
    assert v.outcome is Outcome.RESOLVE_CONFLICT
    assert v.error.startswith("Cannot install numpy==2.2.6 and scipy==1.11.4")
    assert "scipy 1.11.4 depends on numpy<1.28.0 and >=1.21.6" in v.error


def test_missing_wheel_is_no_wheel() -> None:
    v = classify_install((DATA / "pip-no-matching-distribution.log").read_text())
    assert v == v.__class__(Outcome.NO_WHEEL, "No matching distribution found for numpy==1.22.4")


def test_an_unreachable_index_is_infra_not_no_wheel() -> None:
    # pip says "No matching distribution" here too; the connection errors before it decide.
    v = classify_install((DATA / "pip-offline.log").read_text())
    assert v.outcome is Outcome.INFRA_ERROR
    assert "Temporary failure in name resolution" in v.error


@pytest.mark.parametrize(
    ("log", "outcome"),
    [
        ("error: subprocess-exited-with-error\n× Building wheel for x did not run successfully.", Outcome.BUILD_ERROR),
        ("E: Unable to locate package python3.10", Outcome.BUILD_ERROR),
        ("E: Failed to fetch http://deb.debian.org/debian/pool/x.deb  Temporary failure resolving",
         Outcome.INFRA_ERROR),
        ("OSError: [Errno 28] No space left on device", Outcome.INFRA_ERROR),
        ("toomanyrequests: You have reached your pull rate limit.", Outcome.INFRA_ERROR),
        ("ERROR: HTTP error 429 while getting https://files.pythonhosted.org/x.whl", Outcome.INFRA_ERROR),
        ("  × No solution found when resolving dependencies:\n  ╰─▶ Because scipy==1.11.4 depends on numpy<1.28 ...",
         Outcome.RESOLVE_CONFLICT),
        ("  × No solution found when resolving dependencies:\n  ╰─▶ Because numpy==1.24.3 has no wheels with a "
         "matching Python ABI tag", Outcome.NO_WHEEL),
        ("", Outcome.BUILD_ERROR),
    ],
)
def test_other_install_failures(log: str, outcome: Outcome) -> None:
    assert classify_install(log).outcome is outcome


@pytest.mark.parametrize(
    ("name", "outcome", "error"),
    [
        ("uv-conflict.log", Outcome.RESOLVE_CONFLICT,
         "Because scipy==1.11.4 depends on numpy>=1.21.6,<1.28.0 and you require numpy==2.2.6"),
        ("uv-nowheel.log", Outcome.NO_WHEEL, "Because numpy==1.22.4 has no usable wheels"),
        ("uv-nosuch.log", Outcome.NO_WHEEL, "Because there is no version of numpy==9.9.9"),
        ("uv-offline.log", Outcome.INFRA_ERROR, "Failed to fetch"),
    ],
)
def test_uv_output(name: str, outcome: Outcome, error: str) -> None:
    v = classify_install((DATA / name).read_text())
    assert v.outcome is outcome
    assert error in v.error


def test_dtype_size_changed_is_import_error_naming_the_module() -> None:
    v = classify_probes(records("probes-dtype-size-changed.jsonl"))
    assert v.outcome is Outcome.IMPORT_ERROR
    assert v.error.startswith("imports: import scipy.stats: ValueError: numpy.dtype size changed")


def test_passing_probes_pass() -> None:
    assert classify_probes(records("probes-pass.jsonl")).outcome is Outcome.PASS


def probe(**kw) -> dict:
    base = {"probe": "imports", "returncode": 0, "signal": None, "timed_out": False, "stderr_tail": "",
            "result": {"status": "pass", "error": None, "warnings": []}}
    base.update(kw)
    return base


def test_signal_is_crash_with_its_name() -> None:
    v = classify_probe(probe(returncode=-11, signal=11, result=None))
    assert v.outcome is Outcome.CRASH and "SIGSEGV" in v.error


def test_timeout() -> None:
    assert classify_probe(probe(returncode=-9, signal=9, timed_out=True)).outcome is Outcome.TIMEOUT


def test_a_numpy2_warning_on_a_passing_probe_is_warn() -> None:
    stderr = ("\nA module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.2.6 as it may crash. "
              "To support both 1.x and 2.x\n")
    v = classify_probe(probe(stderr_tail=stderr))
    assert v.outcome is Outcome.WARN
    assert "compiled using NumPy 1.x" in v.error


def test_scipy_version_warning_is_warn() -> None:
    w = ("UserWarning: A NumPy version >=1.21.6 and <1.28.0 is required for this version of SciPy "
         "(detected version 2.2.6)")
    assert classify_probe(probe(result={"status": "pass", "warnings": [w]})).outcome is Outcome.WARN


def test_a_probe_that_exits_without_a_verdict_is_an_error() -> None:
    v = classify_probe(probe(returncode=1, result=None, stderr_tail="Fatal Python error: init failed\n"))
    assert v.outcome is Outcome.IMPORT_ERROR and "Fatal Python error" in v.error


def test_gravest_probe_wins() -> None:
    got = classify_probes([probe(), probe(probe="numeric", returncode=-6, signal=6, result=None),
                           probe(probe="x", result={"status": "fail", "error": "boom"})])
    assert got.outcome is Outcome.CRASH and got.error.startswith("numeric: killed by SIGABRT")
