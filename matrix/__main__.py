"""`python -m matrix` is the same command line as `compat-matrix`."""

from matrix.cli import entry

raise SystemExit(entry())
