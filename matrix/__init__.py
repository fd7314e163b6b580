"""compat-matrix: which combinations of package pins actually work on which base image."""

__version__ = "0.1.0"
