"""What every probe shares: the cell's pins and a way to hand back one verdict.

Standard library only (Python 3.6+). A probe runs checks; the first failure is the probe's error,
formatted the way Python prints it ("ValueError: numpy.dtype size changed, ...").
"""

import json
import os
import traceback
import warnings


def pins():
    """{package: version} for the cell; names lower-case with '-' for '_' and '.'."""
    raw = json.loads(os.environ.get("COMPAT_MATRIX_PINS", "{}"))
    return {k.lower().replace("_", "-").replace(".", "-"): v for k, v in raw.items()}


class Skip(Exception):
    """Raised by a check that does not apply to this cell (its package is not installed)."""


def run(checks, facts=None, stop_at_first=False):
    """Run (name, callable) checks in order, write the verdict, exit 0 (the verdict says it all).
    `facts`: a dict the checks fill with what they learnt, kept in the verdict; `stop_at_first`:
    checks that build on each other end at the first failure."""
    results = []
    ran = 0
    error = None
    seen_warnings = []
    for name, fn in checks:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fn()
                results.append({"name": name, "ok": True})
                ran += 1
            except Skip as e:
                results.append({"name": name, "ok": True, "skipped": str(e)})
            except BaseException as e:  # noqa: BLE001 - a probe reports every failure as data
                message = "%s: %s" % (type(e).__name__, e)
                results.append({"name": name, "ok": False, "error": message,
                                "traceback": traceback.format_exc()[-3000:]})
                if error is None:
                    error = "%s: %s" % (name, message)
                ran += 1
        for w in caught:
            seen_warnings.append("%s: %s" % (w.category.__name__, w.message))
        if error is not None and stop_at_first:
            break
    if not ran:
        status = "skip"
    else:
        status = "fail" if error else "pass"
    verdict = {"status": status, "error": error, "checks": results, "warnings": seen_warnings}
    if facts is not None:
        verdict["facts"] = facts
    with open(os.environ["COMPAT_MATRIX_RESULT"], "w", encoding="utf-8") as f:
        json.dump(verdict, f)
