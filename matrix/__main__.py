"""`python -m matrix` is the same command line as `compat-matrix`."""

from matrix.cli import main

raise SystemExit(main())
