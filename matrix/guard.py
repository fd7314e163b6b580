#!/usr/bin/env python3
"""compat-matrix guard: fail an image build fast and clearly on a known issue (seed guide, sections 3 and 7).

`compat-matrix guard` writes this file with the registry's entries embedded below; copy it into
the image and run it as a validation checkpoint after the installs:

    COPY guard.py /tmp/guard.py
    RUN python /tmp/guard.py

Each issue's probe (for an issue without one: imports of the packages of its tested fix; with no
issue at all: import numpy, import scipy.stats) runs in its own subprocess, so a segfault ends one
check, not the guard. A failing check whose output carries a known signature prints a banner with
the issue, its cause, the tested fix and where it was seen.

Exit codes: 0 every check passed (or was skipped: its module is not installed), 1 a known issue
was detected, 2 a check failed with no known signature.

Standard library only, Python 3.6+, ASCII output when the locale needs it: it runs inside the
user's image, which may hold neither compat-matrix, nor PyYAML, nor a recent Python.
"""

import importlib.util
import json
import re
import subprocess
import sys

# The registry's entries, embedded by `compat-matrix guard` (JSON, so the image needs no YAML).
ISSUES_JSON = '[]'

# How a package of a tested fix is checked when its issue names no probe.
MODULES = {
    "numpy": ["numpy"],
    "scipy": ["scipy", "scipy.stats", "scipy.linalg", "scipy.spatial"],
    "torch": ["torch"],
}
DEFAULT_CHECKS = ["import numpy", "import scipy.stats"]
TIMEOUT_S = 300
RULE = "=" * 60
_MISSING = re.compile(r"ModuleNotFoundError: No module named '([A-Za-z0-9_.]+)'")


def say(text, stream=None):
    """Print, falling back to escapes where the image's locale cannot encode the text."""
    stream = stream or sys.stdout
    try:
        stream.write(text + "\n")
    except UnicodeEncodeError:
        stream.write(text.encode("ascii", "backslashreplace").decode("ascii") + "\n")
    stream.flush()


def collapse(text):
    return " ".join(text.split())


def matches(issue, text):
    error = issue["error"]
    flat = collapse(text)
    if "regex" in error:
        return re.search(error["regex"], flat) is not None
    return collapse(error["substring"]) in flat


def checks_for(issues):
    """The check snippets, deduplicated, in registry order."""
    out = []
    for issue in issues:
        if issue.get("probe"):
            codes = [issue["probe"]]
        else:
            codes = []
            for package in sorted(issue.get("requires") or {}):
                name = package.lower()
                for module in MODULES.get(name, [name.replace("-", "_")]):
                    codes.append("import " + module)
        for code in codes:
            if code not in out:
                out.append(code)
    return out or list(DEFAULT_CHECKS)


def run_check(code):
    """(return code or None on timeout, combined output) of one check in its own interpreter."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out.decode("utf-8", "replace") + f"\n(timed out after {TIMEOUT_S} s)"
    return proc.returncode, out.decode("utf-8", "replace")


def not_installed(output):
    """The missing top-level module when a check failed only because a package is absent."""
    m = _MISSING.search(output)
    if not m:
        return None
    top = m.group(1).split(".")[0]
    try:
        return top if importlib.util.find_spec(top) is None else None
    except (ImportError, ValueError):
        return top


def installed_versions(names):
    try:
        from importlib import metadata  # Python 3.8+
    except ImportError:
        return ""
    found = []
    for name in sorted(names):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except Exception:  # noqa: BLE001 - not installed, or unreadable metadata: leave it out
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def error_line(issue, output):
    """The line of the output that carries the signature (the exception, not the traceback)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in reversed(lines):
        if matches(issue, line):
            return line
    return lines[-1] if lines else ""


def banner(issue, code, output):
    seen = []
    if issue.get("versions"):
        seen.append("image versions " + ", ".join(issue["versions"]))
    cells = issue.get("seen_in") or []
    if cells:
        more = f" and {len(cells) - 5} more" if len(cells) > 5 else ""
        seen.append("cells " + ", ".join(cells[:5]) + more)
    lines = [
        RULE,
        "KNOWN ISSUE: " + issue["issue"],
        "  check:      " + code,
        "  error:      " + error_line(issue, output),
        "  cause:      " + issue.get("cause", ""),
        "  tested fix: " + issue.get("solution", ""),
    ]
    if seen:
        lines.append("  seen in:    " + "; ".join(seen))
    versions = installed_versions((issue.get("requires") or {}).keys())
    if versions:
        lines.append("  installed:  " + versions)
    lines.append(RULE)
    return "\n".join(lines)


def main(argv=None):
    issues = json.loads(ISSUES_JSON)
    known, unknown = 0, 0
    for code in checks_for(issues):
        returncode, output = run_check(code)
        if returncode == 0:
            say("guard: ok    " + code)
            continue
        missing = not_installed(output)
        if missing:
            say(f"guard: skip  {code} ({missing} is not installed)")
            continue
        issue = next((i for i in issues if matches(i, output)), None)
        if issue is not None:
            known += 1
            say(banner(issue, code, output), sys.stderr)
            continue
        unknown += 1
        how = "timed out" if returncode is None else f"exited with {returncode}"
        say(f"guard: FAIL  {code} ({how}, no known issue matches)", sys.stderr)
        for line in output.strip().splitlines()[-15:]:
            say("    " + line, sys.stderr)
    if known:
        say(f"guard: {known} known issue(s) detected; apply the tested fix above", sys.stderr)
        return 1
    if unknown:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
