"""Bytecode kept per distribution content, shared by the cells that install the same distribution.

Standard library only (Python 3.6+; the bytecode prefix needs 3.8, older interpreters ignore it).
Importing numpy + scipy takes 2.5 s from source and 0.9 s from bytecode, and a fresh venv has none;
compiling all of it at install time, as pip does, costs more than it saves once. So the probes
write and read bytecode under a prefix (PYTHONPYCACHEPREFIX), and in that prefix each package
directory of the venv is a link to a directory kept for that distribution's content: its dist-info
name and the hash of its RECORD (every file's sha256). Sources under one key are the same bytes by
construction, so no .pyc there can be stale for them, whatever mtimes unpacking gave the files
(which can coincide between numpy versions: paths alone would not be safe). The standard library
is kept the same way, under the interpreter's build (version string, path, cache tag): with a
bytecode prefix Python reads no __pycache__ beside the sources, so without it every probe run
compiled the ~130 stdlib modules numpy and scipy import (0.2 s a cell).

    python _bytecode.py compile OVERLAY   compile the venv's distributions not kept yet (the docker
                                          backend's workbench: its probe containers read OVERLAY
                                          read-only)
The driver links the prefix to OVERLAY (link()) when COMPAT_MATRIX_PYC_OVERLAY names one.
"""

import os
import sys

DONE = ".compiled"
# Not compiled ahead: tests, GUIs and anything installed into the interpreter itself.
SKIP = frozenset(("test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "site-packages",
                  "dist-packages", "__pycache__"))


def site_packages():
    import site

    found = [p for p in site.getsitepackages() if os.path.isdir(p)]
    return found[0] if found else None


def packages(sp):
    """Top-level package directory → the key of the one distribution that owns it. Directories two
    distributions share (namespace packages), and distributions whose RECORD leaves a file without a
    hash (content unknown), are left out: their bytecode stays the cell's own."""
    import hashlib  # here, as every import but os and sys: the standard library is linked first

    import _fingerprint

    owners = {}
    for name in sorted(os.listdir(sp)):
        record = os.path.join(sp, name, "RECORD")
        if not (name.endswith(".dist-info") and os.path.isfile(record)):
            continue
        entries = _fingerprint.record_entries(record)
        key = None
        if entries is not None:
            key = "%s-%s" % (name, hashlib.sha256("\n".join(entries).encode()).hexdigest()[:20])
        for entry in entries or []:
            path = entry.split("\0", 1)[0]
            if "/" in path and not path.split("/", 1)[0].endswith((".dist-info", ".data")):
                owners.setdefault(path.split("/", 1)[0], set()).add(key or "")
    return {top: keys.pop() for top, keys in owners.items() if len(keys) == 1 and "" not in keys}


def stdlib():
    """The standard library's directory as imports name it, and the key its bytecode is kept under:
    the interpreter's build, spelt out (hashlib is not imported yet when this runs)."""
    path = os.path.dirname(os.__file__)
    build = " ".join((sys.implementation.cache_tag, path, sys.version))
    return path, "stdlib-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in build)[:200]


def link(prefix, overlay, writable):
    """Point the prefix's mirrors of the standard library and of each package directory at their
    kept directories (the standard library first: what this imports then comes from there); how
    many links it made (none where one is already: the probe group's process after the driver)."""
    sp = site_packages()
    if sp is None or not (writable or os.path.isdir(overlay)):
        return 0
    linked = 0
    std, key = stdlib()
    inside = [os.path.join(p, "") for p in (sp, os.path.realpath(sp))]
    if not any(p.startswith(os.path.join(std, "")) for p in inside):  # a venv's packages are elsewhere
        linked += _link(os.path.join(overlay, key), os.path.join(prefix, std.lstrip("/")), writable)
    mirror = os.path.join(prefix, os.path.realpath(sp).lstrip("/"))
    for top, key in sorted(packages(sp).items()):
        linked += _link(os.path.join(overlay, key, top), os.path.join(mirror, top), writable)
    return linked


def _link(kept, mirror, writable):
    if os.path.islink(mirror):
        return 0
    if writable:
        os.makedirs(kept, exist_ok=True)
    elif not os.path.isdir(kept):
        return 0
    if os.path.isdir(mirror):
        # What the interpreter's start-up compiled into the prefix before anything could link it
        # (the encodings package) goes aside; it is loaded already.
        os.rename(mirror, "%s.start-up-%d" % (mirror, os.getpid()))
    os.makedirs(os.path.dirname(mirror), exist_ok=True)
    os.symlink(kept, mirror)
    return 1


def compile_tree(source, kept, skip=frozenset()):
    """Compile every .py under `source` into `kept` (the prefix's layout), then mark it done."""
    import py_compile

    tag = sys.implementation.cache_tag
    for folder, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in skip]
        rel = os.path.relpath(folder, source)
        for name in files:
            if name.endswith(".py"):
                target = os.path.normpath(os.path.join(kept, rel, "%s.%s.pyc" % (name[:-3], tag)))
                py_compile.compile(os.path.join(folder, name), cfile=target, quiet=2)
    os.makedirs(kept, exist_ok=True)
    open(os.path.join(kept, DONE), "w").close()


def compile_all(overlay):
    """Compile the standard library and each package not kept yet into their kept directories;
    how many of them."""
    sp = site_packages()
    if sp is None:
        return 0
    std, std_key = stdlib()
    todo = [(std, os.path.join(overlay, std_key), SKIP)]
    todo += [(os.path.join(sp, top), os.path.join(overlay, key, top), frozenset())
             for top, key in sorted(packages(sp).items())]
    done = 0
    for source, kept, skip in todo:
        if not os.path.exists(os.path.join(kept, DONE)):
            compile_tree(source, kept, skip)
            done += 1
    return done


if __name__ == "__main__":
    if sys.argv[1:2] != ["compile"] or len(sys.argv) != 3:
        sys.exit("usage: python _bytecode.py compile OVERLAY")
    print(compile_all(sys.argv[2]))
