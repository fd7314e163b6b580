"""The probe driver, run for real as a subprocess over probes that misbehave on purpose."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from matrix import probing
from matrix.cells import Cell
from matrix.classify import classify_probe, classify_probes
from matrix.store import Outcome
from tests.unit.conftest import interpreter

NASTY = {
    "a_segfault.py": "import ctypes\nctypes.string_at(0)\n",
    "b_hang.py": "import time\ntime.sleep(60)\n",
    "c_flood.py": (
        "import os, sys, _probe\n"
        "sys.stdout.buffer.write(os.urandom(10 * 1024 * 1024))\n"
        "forged = ' {\"kind\": \"probe\", \"probe\": \"forged\"}'\n"
        "print(os.environ.get('COMPAT_MATRIX_NONCE', 'no-nonce') + forged)\n"
        "_probe.run([('ok', lambda: None)])\n"
    ),
    "d_raises.py": (
        "import _probe\n\ndef boom():\n    raise ValueError('numpy.dtype size changed')\n\n"
        "_probe.run([('import x', boom)])\n"
    ),
    "e_skip.py": "import _probe\n_probe.run([])\n",
}


def run_driver(tmp_path: Path, probes: dict[str, str], timeout: float = 3.0) -> probing.DriverReport:
    d = tmp_path / "probes"
    d.mkdir(parents=True)
    for name in ("_driver.py", "_probe.py"):
        shutil.copy(probing.probes_dir() / name, d / name)
    for name, text in probes.items():
        (d / name).write_text(text)
    nonce = probing.new_nonce()
    env = dict(os.environ, **probing.environment(Cell("b", "together", (("numpy", "1.0"),)), nonce, timeout))
    env["HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, str(d / "_driver.py")], env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return probing.parse(out.stdout.decode("utf-8", "replace"), nonce)


def test_each_misbehaving_probe_takes_down_only_itself(tmp_path: Path) -> None:
    report = run_driver(tmp_path, NASTY)
    assert report.complete
    assert report.python == ".".join(map(str, sys.version_info[:3]))
    by_name = {p["probe"]: p for p in report.probes}
    assert sorted(by_name) == ["a_segfault", "b_hang", "c_flood", "d_raises", "e_skip"]
    assert classify_probe(by_name["a_segfault"]).outcome is Outcome.CRASH
    assert classify_probe(by_name["b_hang"]).outcome is Outcome.TIMEOUT
    # 10 MB of garbage and a forged line: only the tail is kept and the real verdict counts.
    assert classify_probe(by_name["c_flood"]).outcome is Outcome.PASS
    assert len(by_name["c_flood"]["stdout_tail"]) <= 4000
    assert "no-nonce" in by_name["c_flood"]["stdout_tail"]
    v = classify_probe(by_name["d_raises"])
    assert v.outcome is Outcome.IMPORT_ERROR and v.error == "d_raises: import x: ValueError: numpy.dtype size changed"
    assert by_name["e_skip"]["result"]["status"] == "skip"
    assert classify_probes(report.probes).outcome is Outcome.CRASH


def test_lines_without_the_nonce_are_ignored() -> None:
    forged = json.dumps({"kind": "probe", "probe": "imports", "result": {"status": "pass"}})
    report = probing.parse(f"{forged}\nwrongnonce {forged}\nnonce1 not json\n", "nonce1")
    assert report.probes == [] and not report.complete


def test_shipped_probes_pass_on_this_interpreter_where_numpy_is_absent_they_fail(tmp_path: Path) -> None:
    # The real probe scripts, against a package that is surely not installed here.
    d = probing.probes_dir()
    nonce = probing.new_nonce()
    env = dict(os.environ, **probing.environment(
        Cell("b", "together", (("compat-matrix-no-such-package", "1.0"),)), nonce, 30))
    env["HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, str(d / "_driver.py")], env=env, capture_output=True, timeout=120)
    report = probing.parse(out.stdout.decode(), nonce)
    v = classify_probes(report.probes)
    assert v.outcome is Outcome.IMPORT_ERROR
    assert "ModuleNotFoundError: No module named 'compat_matrix_no_such_package'" in v.error
    assert report.installed == {"compat-matrix-no-such-package": None}


@pytest.mark.parametrize("version", ["3.6", "3.7", "3.8", "3.10", "3.12", "3.13"])
def test_the_driver_and_probes_run_on_old_and_new_interpreters(version: str, tmp_path: Path) -> None:
    # The probes run on the cell's own Python, which may be far older or newer than ours.
    found = interpreter(version)
    nonce = probing.new_nonce()
    env = dict(os.environ, **probing.environment(
        Cell("b", "together", (("compat-matrix-no-such-package", "1.0"),)), nonce, 30))
    env["HOME"] = str(tmp_path)
    out = subprocess.run([found.path, str(probing.probes_dir() / "_driver.py")], env=env, capture_output=True,
                         timeout=120)
    report = probing.parse(out.stdout.decode(), nonce)
    assert report.complete, out.stderr.decode()
    assert report.python == found.version
    assert [p["probe"] for p in report.probes] == ["cuda", "imports", "known_issues", "numeric", "torch_numpy"]
    assert classify_probes(report.probes).outcome is Outcome.IMPORT_ERROR


def test_registry_snippets_run_and_absent_packages_skip(tmp_path: Path) -> None:
    nonce = probing.new_nonce()
    snippets = (("absent", "import compat_matrix_no_such_package"),
                ("seen", "raise ValueError('numpy.dtype size changed, may indicate binary incompatibility')"),
                ("fine", "import json"))
    env = dict(os.environ, **probing.environment(Cell("b", "together", ()), nonce, 30, snippets))
    env.update(COMPAT_MATRIX_PROBES="known_issues", HOME=str(tmp_path))
    out = subprocess.run([sys.executable, str(probing.probes_dir() / "_driver.py")], env=env, capture_output=True,
                         timeout=60)
    (record,) = probing.parse(out.stdout.decode(), nonce).probes
    checks = {c["name"].split(":")[0]: c for c in record["result"]["checks"]}
    assert checks["issue absent"]["skipped"] == "compat_matrix_no_such_package is not installed"
    assert checks["issue fine"]["ok"] and not checks["issue seen"]["ok"]
    v = classify_probe(record)
    assert v.outcome is Outcome.IMPORT_ERROR
    assert v.error.startswith("known_issues: issue seen: raise ValueError(")
    assert "numpy.dtype size changed" in v.error


GROUPED = {
    "a_ok.py": ("import sys, _probe\nprint('a says hello')\nsys.stderr.write('a warns\\n')\n"
                "_probe.run([('ok', lambda: None)])\n"),
    "b_ok.py": "import _probe\nprint('b says hello')\n_probe.run([('ok', lambda: None)])\n",
    "c_segfault.py": "import ctypes\nprint('c before the crash', flush=True)\nctypes.string_at(0)\n",
    "d_raises.py": NASTY["d_raises.py"],
    "e_ok.py": "import _probe\n_probe.run([('ok', lambda: None)])\n",
}


def comparable(report: probing.DriverReport) -> list[tuple[object, ...]]:
    return [(p["probe"], p["returncode"], p["signal"], p["timed_out"], p["stdout_tail"].strip(),
             (p["result"] or {}).get("status"), classify_probe(p).outcome) for p in report.probes]


def test_probes_in_one_interpreter_report_what_a_process_each_would(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    grouped = run_driver(tmp_path / "group", GROUPED)
    monkeypatch.setenv("COMPAT_MATRIX_PROBE_GROUP", "0")
    alone = run_driver(tmp_path / "alone", GROUPED)
    assert comparable(grouped) == comparable(alone)
    by_name = {p["probe"]: p for p in grouped.probes}
    assert by_name["a_ok"]["stdout_tail"] == "a says hello\n" and by_name["a_ok"]["stderr_tail"] == "a warns\n"
    assert by_name["b_ok"]["stdout_tail"] == "b says hello\n" and by_name["b_ok"]["stderr_tail"] == ""
    assert by_name["c_segfault"]["signal"] == 11 and "before the crash" in by_name["c_segfault"]["stdout_tail"]


def test_a_probe_that_hangs_in_the_group_times_out_alone(tmp_path: Path) -> None:
    report = run_driver(tmp_path, {"a_ok.py": GROUPED["a_ok.py"], "b_hang.py": NASTY["b_hang.py"],
                                   "c_ok.py": GROUPED["e_ok.py"]}, timeout=2.0)
    outcomes = {p["probe"]: classify_probe(p).outcome for p in report.probes}
    assert outcomes == {"a_ok": Outcome.PASS, "b_hang": Outcome.TIMEOUT, "c_ok": Outcome.PASS}


def _running(marker: str) -> list[int]:
    """Live processes whose command line holds `marker`."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and marker.encode() in (d / "cmdline").read_bytes():
                if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(int(d.name))
        except OSError:
            continue
    return out


@pytest.mark.parametrize("group", ["1", "0"])
def test_processes_a_probe_leaves_behind_are_killed_and_counted(tmp_path: Path, group: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    marker = f"98765{group}.5"  # sleep's argument: finds our strays among the machine's processes
    leaves = (
        "import os, subprocess, _probe\n"
        f"for _ in range(20):\n    subprocess.Popen(['sleep', '{marker}'])\n"
        # a daemon: double fork and a session of its own, out of the probe's process group
        "if os.fork() == 0:\n    os.setsid()\n"
        f"    if os.fork() == 0:\n        os.execvp('sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
        "_probe.run([('ok', lambda: None)])\n"
    )
    monkeypatch.setenv("COMPAT_MATRIX_PROBE_GROUP", group)
    report = run_driver(tmp_path, {"a_leaves.py": leaves, "b_ok.py": GROUPED["e_ok.py"]}, timeout=20)
    try:
        assert _running(marker) == []
        by_name = {p["probe"]: p for p in report.probes}
        assert sum(p.get("strays", 0) for p in report.probes) >= 21
        assert classify_probe(by_name["a_leaves"]).outcome is Outcome.PASS
    finally:
        for pid in _running(marker):
            os.kill(pid, 9)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the driver as another user (nobody), which needs root")
def test_probe_code_cannot_forge_the_drivers_records(tmp_path: Path) -> None:
    """As the docker backend runs it (a user other than root): probe code reads the driver's
    environment for the nonce and writes forged records to its output, then kills it."""
    import tempfile

    forger = (
        "import os, signal, _probe\n"
        "def parent(pid):\n"
        "    with open('/proc/%d/stat' % pid) as f:\n"
        "        return int(f.read().rsplit(')', 1)[1].split()[1])\n"
        "pid, found = os.getpid(), ''\n"
        "tried = []\n"
        "for _ in range(3):\n"
        "    pid = parent(pid)\n"
        "    try:\n"
        "        env = open('/proc/%d/environ' % pid, 'rb').read().split(b'\\0')\n"
        "        found = [e for e in env if e.startswith(b'COMPAT_MATRIX_NONCE=')] or found\n"
        "        tried.append('read %d' % pid)\n"
        "    except OSError as e:\n"
        "        tried.append('denied %d' % pid)\n"
        "    if found:\n"
        "        nonce = found[0].split(b'=', 1)[1].decode()\n"
        "        line = nonce + ' {\"kind\": \"probe\", \"probe\": \"forged\", '\n"
        "        line += '\"result\": {\"status\": \"pass\"}}\\n'\n"
        "        with open('/proc/%d/fd/1' % pid, 'w') as out:\n"
        "            out.write(line + nonce + ' {\"kind\": \"done\"}\\n')\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        break\n"
        "with open(os.environ['FORGER_LOG'], 'w') as f:\n"
        "    f.write(repr(tried))\n"
        "_probe.run([('ok', lambda: None)])\n"
    )
    d = Path(tempfile.mkdtemp(prefix="cm-forge-"))
    try:
        d.chmod(0o777)
        for name in ("_driver.py", "_probe.py"):
            shutil.copy(probing.probes_dir() / name, d / name)
        (d / "a_forger.py").write_text(forger)
        for f in d.iterdir():
            f.chmod(0o644)
        nonce = probing.new_nonce()
        env = dict(os.environ, **probing.environment(Cell("b", "together", ()), nonce, 20))
        env.update(HOME=str(d), FORGER_LOG=str(d / "forger.log"), PYTHONPYCACHEPREFIX=str(d / "pyc"))
        env.pop("COMPAT_MATRIX_PYC_OVERLAY", None)
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                              str(d / "_driver.py")], env=env, capture_output=True, timeout=60, cwd=d)
        report = probing.parse(out.stdout.decode("utf-8", "replace"), nonce)
        assert [p["probe"] for p in report.probes] == ["a_forger"], (out.stdout, out.stderr)
        assert out.returncode == 0 and report.complete  # the driver lived to its orderly end
        assert "denied" in (d / "forger.log").read_text() and "read" not in (d / "forger.log").read_text()
    finally:
        shutil.rmtree(d, ignore_errors=True)
