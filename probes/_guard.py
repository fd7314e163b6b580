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
was detected, 2 a check failed with no known signature. A check is skipped only when the check's
own code imports the missing module; a module missing under an installed package (scipy present,
numpy absent: `import scipy.stats` fails inside scipy) is a failure, reported as such.

Standard library only, Python 3.6+, ASCII output when the locale needs it: it runs inside the
user's image, which may hold neither compat-matrix, nor PyYAML, nor a recent Python.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig

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
MATCH_CHARS = 8192  # of a check's output a regex signature is searched in
RULE = "=" * 60
_MISSING = re.compile(r"ModuleNotFoundError: No module named '([A-Za-z0-9_.]+)'")
_FRAME = re.compile(r'^[ \t]*File "([^"\n]+)", line \d+', re.MULTILINE)


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


def bounded(flat):
    """As the registry searches a regex (matrix/registry.py bounded_text): the whole text up to
    MATCH_CHARS, else its first and last halves of that."""
    if len(flat) <= MATCH_CHARS:
        return flat
    half = MATCH_CHARS // 2
    return flat[:half] + " ... " + flat[-half:]


def matches(issue, text):
    error = issue["error"]
    flat = collapse(text)
    if "regex" in error:  # the registry refused regexes that backtrack catastrophically
        return re.search(error["regex"], bounded(flat)) is not None
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


def _is_package_file(path):
    """Whether a traceback frame's file is an installed package's code (not the check's own code,
    not the interpreter's import machinery or standard library)."""
    if path.startswith("<"):  # <string> (the check), <frozen importlib._bootstrap>
        return False
    parts = os.path.normcase(os.path.abspath(path)).split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib"):
        root = paths.get(key)
        if root and os.path.normcase(os.path.abspath(path)).startswith(os.path.normcase(root) + os.sep):
            return False
    return True


def package_of(path):
    """The top-level package a file of package code belongs to (.../site-packages/scipy/x.py: scipy)."""
    parts = os.path.abspath(path).split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            i = len(parts) - 1 - parts[::-1].index(marker)
            if i + 1 < len(parts):
                name = parts[i + 1]
                return name[:-3] if name.endswith(".py") else name
    return os.path.basename(os.path.dirname(path)) or path


def missing_module(output):
    """(missing top-level module, the file of installed package code that imported it, or None)
    when a check failed because a module is not installed; None when it failed otherwise."""
    found = list(_MISSING.finditer(output))
    if not found:
        return None
    m = found[-1]  # with chained exceptions, the one that ended the check
    top = m.group(1).split(".")[0]
    try:
        if importlib.util.find_spec(top) is not None:
            return None  # the package is there and lacks a module: a failure, not an absence
    except (ImportError, ValueError):
        pass
    before = output[:m.start()]
    start = before.rfind("Traceback (most recent call last):")
    frames = [f for f in _FRAME.findall(before[start:] if start >= 0 else before)
              if not f.startswith("<frozen")]
    own = [f for f in frames if f == "<string>" or _is_package_file(f)]
    importer = own[-1] if own and own[-1] != "<string>" else None
    return top, importer


def not_installed(output):
    """The missing top-level module when a check failed only because the package it checks is
    absent (its own code imported it); None otherwise, a module missing under an installed
    package included."""
    found = missing_module(output)
    if found is None or found[1] is not None:
        return None
    return found[0]


def needs_missing(output):
    """What to say when an installed package imports a module that is not installed, or None."""
    found = missing_module(output)
    if found is None or found[1] is None:
        return None
    top, importer = found
    return f"{top} is not installed, but the installed package {package_of(importer)} needs it ({importer})"


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
        needs = needs_missing(output)
        issue = next((i for i in issues if matches(i, output)), None)
        if issue is not None:
            known += 1
            say(banner(issue, code, output), sys.stderr)
            continue
        unknown += 1
        how = "timed out" if returncode is None else f"exited with {returncode}"
        say(f"guard: FAIL  {code} ({how}, no known issue matches)", sys.stderr)
        if needs:
            say("    " + needs, sys.stderr)
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
