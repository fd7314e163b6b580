"""The registry's issue-specific checks (each entry's `probe` snippet), run in every cell.

A snippet that needs a package the cell does not have is skipped: the issue cannot arise there.
"""

import importlib.util
import json
import os

import _probe


def snippet(issue, code):
    def check():
        try:
            exec(compile(code, "<registry: %s>" % issue, "exec"), {"__name__": "__known_issue__"})
        except ImportError as e:
            top = (getattr(e, "name", None) or "").split(".")[0]
            if top and importlib.util.find_spec(top) is None:
                raise _probe.Skip("%s is not installed" % top) from None
            raise
    return check


def main():
    entries = json.loads(os.environ.get("COMPAT_MATRIX_ISSUE_PROBES", "[]"))
    _probe.run([("issue %s: %s" % (e["issue"], e["probe"]), snippet(e["issue"], e["probe"])) for e in entries])


if __name__ == "__main__":
    main()
