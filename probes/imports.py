"""Imports every module the pinned packages are known by, the way an application would."""

import importlib

import _probe

# The modules the user's own checkpoints import (seed guide: scipy.stats, cKDTree); other
# packages are imported by their top-level module names.
KNOWN = {
    "numpy": ["numpy"],
    "scipy": ["scipy", "scipy.stats", "scipy.linalg", "scipy.optimize", "scipy.spatial",
              "scipy.spatial.cKDTree"],
    "torch": ["torch"],
}


def top_level(dist_name):
    try:
        from importlib import metadata
        text = metadata.distribution(dist_name).read_text("top_level.txt")
    except Exception:  # noqa: BLE001 - no metadata: fall back to the name itself
        text = None
    names = [line.strip() for line in (text or "").splitlines()
             if line.strip() and not line.startswith("_")]
    return names or [dist_name.replace("-", "_")]


def importer(target):
    def check():
        try:
            importlib.import_module(target)
        except ImportError:
            # "scipy.spatial.cKDTree" is a class, not a module: import the parent, then get it.
            parent, _, attr = target.rpartition(".")
            if not parent:
                raise
            module = importlib.import_module(parent)
            if not hasattr(module, attr):
                raise
            getattr(module, attr)
    return check


def main():
    checks = []
    for name in sorted(_probe.pins()):
        for target in KNOWN.get(name) or top_level(name):
            checks.append(("import " + target, importer(target)))
    _probe.run(checks)


if __name__ == "__main__":
    main()
