"""Prints one hash for the environment this interpreter sees: what decides what the probes find.

Standard library only (Python 3.6+). Two environments print the same hash when the interpreter is
the same and every installed file under site-packages is the same (by the hashes in each
distribution's RECORD). Scripts outside site-packages and the installer's bookkeeping (INSTALLER,
REQUESTED, direct_url.json, whose content names paths and requests) are left out. A file without
a hash in its RECORD makes the environment unique (prints nothing): better probed than guessed.
"""

import csv
import glob
import hashlib
import os
import site
import sys

SKIP = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def record_entries(record):
    """A distribution's files under site-packages and their hashes, from its RECORD; None when a
    file has no hash (its content is unknown). Also read by the bytecode sharing (probes/_bytecode.py)."""
    entries = []
    with open(record, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if not row or row[0].startswith("..") or row[0].endswith(SKIP) or "__pycache__" in row[0]:
                continue
            if len(row) < 2 or not row[1]:
                return None
            entries.append(row[0] + "\0" + row[1])
    return sorted(entries)


def main():
    h = hashlib.sha256(sys.version.encode() + b"\0" + sys.platform.encode())
    entries = []
    for sp in sorted(set(site.getsitepackages())):
        for record in sorted(glob.glob(os.path.join(sp, "*.dist-info", "RECORD"))):
            found = record_entries(record)
            if found is None:
                return 1
            entries += found
    for entry in sorted(entries):
        h.update(entry.encode() + b"\n")
    sys.stdout.write(h.hexdigest() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
