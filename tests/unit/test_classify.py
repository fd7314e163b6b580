"""Classification from recorded installer and probe output (recorded from real runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from matrix.classify import Verdict, classify_install, classify_probe, classify_probes, unwrap
from matrix.probing import RunResult, judge, parse
from matrix.store import Outcome

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
        ("", Outcome.INFRA_ERROR),
        ("E: Package 'python3.10' has no installation candidate", Outcome.BUILD_ERROR),
    ],
)
def test_other_install_failures(log: str, outcome: Outcome) -> None:
    assert classify_install(log).outcome is outcome


# Recorded from uv 0.13 (tests/unit/data): its cache directory on a full tmpfs (at the cache's set-up,
# and while a wheel is extracted), on a read-only bind mount (a new cache, an existing one), owned by
# another user; and uv killed with SIGKILL while downloading (it printed no error at all).
@pytest.mark.parametrize(
    ("name", "returncode", "error"),
    [
        ("uv-cache-full-init.log", 2, "No space left on device (os error 28)"),
        ("uv-cache-full-extract.log", 1, "No space left on device (os error 28)"),
        ("uv-cache-readonly-init.log", 2, "Read-only file system (os error 30)"),
        ("uv-cache-readonly-lock.log", 2, "Read-only file system (os error 30)"),
        ("uv-cache-permission-denied.log", 2, "Permission denied (os error 13)"),
        ("uv-killed.log", -9, "the installer was killed by SIGKILL (exit code -9); last said: Downloading numpy"),
        ("uv-killed.log", 137, "the installer was killed by SIGKILL (exit code 137)"),
    ],
)
def test_the_installers_world_failing_is_infra_not_a_verdict(name: str, returncode: int, error: str) -> None:
    for only_binary in (True, False):
        v = classify_install((DATA / name).read_text(), returncode=returncode, only_binary=only_binary)
        assert v.outcome is Outcome.INFRA_ERROR
        assert error in v.error


# The errors this kernel cannot be made to give on demand (no tmpfs quotas, no fault injection),
# in uv's words for the others: "<strerror> (os error N)" under the step that failed.
@pytest.mark.parametrize("strerror", ["Disk quota exceeded (os error 122)", "Input/output error (os error 5)"])
def test_quota_and_io_errors_are_infra(strerror: str) -> None:
    log = ("Using Python 3.11.7 environment at: v\nResolved 1 package in 117ms\nDownloading numpy (16.0MiB)\n"
           "error: Failed to download `numpy==2.2.6`\n  cause: Failed to extract archive: numpy-2.2.6-cp311-cp311-"
           "manylinux_2_17_x86_64.manylinux2014_x86_64.whl\n  cause: I/O operation failed during extraction\n"
           f"  cause: failed to write to file `/cache/uv/.tmpBmSWj4/numpy/version.py`: {strerror}\n")
    v = classify_install(log, returncode=1)
    assert v.outcome is Outcome.INFRA_ERROR and strerror in v.error


def test_the_engines_words_for_the_same_faults_are_infra() -> None:
    # Go's strerror, as a docker build step reports it.
    log = "failed to copy files: write /var/lib/docker/tmp/x: input/output error"
    assert classify_install(log, only_binary=False).outcome is Outcome.INFRA_ERROR


def test_an_installer_that_says_nothing_is_infra() -> None:
    v = classify_install("", returncode=2)
    assert v.outcome is Outcome.INFRA_ERROR and v.error == "the installer failed with no output (exit code 2)"
    assert classify_install(" \n\n", only_binary=False).outcome is Outcome.INFRA_ERROR


def test_a_failure_no_rule_names_is_infra_when_nothing_is_built_and_build_error_otherwise() -> None:
    log = "Using Python 3.11.7 environment at: v\nerror: something uv has never said before\n"
    wheels_only = classify_install(log, returncode=2)
    assert wheels_only.outcome is Outcome.INFRA_ERROR
    assert wheels_only.error == "the installer failed without naming the pins (exit code 2): something uv has never " \
                                "said before"
    assert classify_install(log, returncode=2, only_binary=False).outcome is Outcome.BUILD_ERROR


def test_a_build_that_fails_in_package_code_is_build_error() -> None:
    # Recorded: uv building a local sdist whose setup.py raises (only_binary: false).
    v = classify_install((DATA / "uv-build-failed.log").read_text(), returncode=1, only_binary=False)
    assert v.outcome is Outcome.BUILD_ERROR and v.error == "Failed to build `a1badpkg==1.0`"


def test_the_pins_named_by_the_installer_stay_verdicts_whatever_the_exit_code() -> None:
    for name, outcome in (("uv-conflict.log", Outcome.RESOLVE_CONFLICT), ("uv-nowheel.log", Outcome.NO_WHEEL),
                          ("uv-nosuch.log", Outcome.NO_WHEEL)):
        assert classify_install((DATA / name).read_text(), returncode=1).outcome is outcome


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


def _ran(argv: list[str]) -> RunResult:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return RunResult(done.returncode, done.stdout, done.stderr)


def test_a_driver_that_printed_nothing_is_infra_not_build_error() -> None:
    # A real process that ends without a word on either stream (as a driver killed from outside does).
    ran = _ran([sys.executable, "-c", "import os; os._exit(3)"])
    v = judge(ran, parse(ran.stdout, "nonce"), "4g")
    assert v == Verdict(Outcome.INFRA_ERROR, "the probe driver printed nothing (exit code 3)")
    killed = _ran([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert judge(killed, parse(killed.stdout, "nonce"), "4g").outcome is Outcome.INFRA_ERROR


def test_an_interpreter_that_says_why_it_cannot_run_is_build_error() -> None:
    ran = _ran(["sh", "-c", "exec /nonexistent/venv/bin/python -V"])
    v = judge(ran, parse(ran.stdout, "nonce"), "4g")
    assert v.outcome is Outcome.BUILD_ERROR
    assert v.error.startswith("the environment cannot run Python: ") and "not found" in v.error


def test_a_driver_killed_after_its_last_record_is_a_crash_not_a_pass() -> None:
    # What forged records look like to the host: a complete report, then the driver dies by a signal.
    lines = ('n {"kind": "env", "python": "3.11.7", "installed": {}}\n'
             'n {"kind": "probe", "probe": "imports", "result": {"status": "pass"}}\n'
             'n {"kind": "done"}\n')
    forged = _ran([sys.executable, "-c",
                   f"import os, signal, sys; sys.stdout.write({lines!r}); sys.stdout.flush(); "
                   "os.kill(os.getpid(), signal.SIGKILL)"])
    v = judge(forged, parse(forged.stdout, "n"), "4g")
    assert v == Verdict(Outcome.CRASH, "the probe driver did not end in order (exit code -9)")
    orderly = _ran([sys.executable, "-c", f"import sys; sys.stdout.write({lines!r})"])
    assert judge(orderly, parse(orderly.stdout, "n"), "4g") == Verdict(Outcome.PASS)


def test_stray_processes_the_probes_left_are_said_in_a_passing_record() -> None:
    v = classify_probes([probe(strays=3), probe(probe="numeric", strays=200)])
    assert v == Verdict(Outcome.PASS, "killed 203 stray process(es) the probes left behind")
    failing = classify_probes([probe(strays=3), probe(probe="x", result={"status": "fail", "error": "boom"})])
    assert failing.error == "x: boom"  # a failure's error stays its signature, as the registry matches it


def test_uv_s_explanation_wrapped_at_80_columns_reads_as_on_a_wide_terminal() -> None:
    # uv wraps at the width it finds (80 columns under a test runner): the conflict's words are one
    # sentence again, the same verdict and error as uv's one-line form, and it settles offline.
    from matrix import install
    from matrix.cells import Cell

    wrapped = (DATA / "uv-conflict-wrapped.log").read_text()
    v = classify_install(wrapped, returncode=1)
    assert v == Verdict(Outcome.RESOLVE_CONFLICT, "Because scipy==1.11.4 depends on numpy>=1.21.6,<1.28.0 and you "
                        "require numpy==2.2.6, we can conclude that your requirements and scipy==1.11.4 are "
                        "incompatible.")
    assert install._settled_offline(v, Cell("b", "together", (("numpy", "2.2.6"), ("scipy", "1.11.4"))))
    assert "\n         And because you require scipy==1.11.4" in unwrap(wrapped)
    assert unwrap("line one\n  two\n") == "line one\n  two\n"  # nothing else is touched
