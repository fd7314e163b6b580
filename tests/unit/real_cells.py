"""Cell records from real sweeps, for the registry, known-good, advisor and preflight tests.

BOOKWORM: the five cells of a real docker sweep on bookworm (python 3.11.2), outcomes and errors as
the sweep recorded them; only the run id is ours (the sweep's own was not kept). VENV_SWEEP: the
96-cell venv sweep committed as results/records.jsonl (pyenv CPython 3.10-3.13), copied verbatim.
"""

from __future__ import annotations

from pathlib import Path

from matrix.store import Outcome, Record, load_records

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
DOCKERFILES = RESOURCES / "dockerfiles"
VENV_SWEEP = RESOURCES / "records" / "venv-sweep-20261128.jsonl"
RUN_ID = "20261127T094512Z-b00c31"

DTYPE = ("imports: import scipy.stats: ValueError: numpy.dtype size changed, may indicate binary "
         "incompatibility. Expected 96 from C header, got 88 from PyObject")
CONFLICT = ("Cannot install numpy==2.2.6 and scipy==1.11.4 because these package versions have conflicting "
            "dependencies. (scipy 1.11.4 depends on numpy<1.28.0 and >=1.21.6)")
NO_WHEEL = "No matching distribution found for numpy==1.22.4"


def _record(numpy: str, mode: str, outcome: Outcome, error: str = "",
            installed: dict[str, str | None] | None = None) -> Record:
    pins = {"numpy": numpy, "scipy": "1.11.4"}
    return Record(
        cell=f"bookworm-py311-numpy{numpy}-scipy1.11.4-{mode}",
        base="bookworm-py311",
        mode=mode,
        pins=pins,
        outcome=outcome,
        error=error,
        installed=installed if installed is not None else {"numpy": None, "scipy": None},
        backend="docker",
        python="3.11.2",
        run_id=RUN_ID,
    )


def bookworm() -> list[Record]:
    installed_ok = {"numpy": "1.26.4", "scipy": "1.11.4"}
    return [
        _record("1.26.4", "together", Outcome.PASS, installed=installed_ok),
        _record("1.26.4", "layered", Outcome.PASS, installed=installed_ok),
        _record("2.2.6", "together", Outcome.RESOLVE_CONFLICT, CONFLICT),
        _record("2.2.6", "layered", Outcome.IMPORT_ERROR, DTYPE, {"numpy": "2.2.6", "scipy": "1.11.4"}),
        _record("1.22.4", "together", Outcome.NO_WHEEL, NO_WHEEL),
    ]


def venv_sweep() -> list[Record]:
    return load_records(VENV_SWEEP)
