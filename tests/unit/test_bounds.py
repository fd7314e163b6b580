"""The bounds audit: declared requirements judged by override cells, from uv's real messages."""

from __future__ import annotations

import json

from matrix import install, spec
from matrix.cells import Cell
from matrix.registry import bounds
from matrix.store import Outcome, Record

# uv's words for the two real conflicts (numpy 2.2.6 with scipy 1.11.4; numpy 1.26.4 with scipy 1.9.3).
NEEDED = ("Because scipy==1.11.4 depends on numpy>=1.21.6,<1.28.0 and you require numpy==2.2.6, we can conclude "
          "that your requirements and scipy==1.11.4 are incompatible.")
STRICT = ("Because scipy==1.9.3 depends on numpy>=1.18.5,<1.26.0 and you require numpy==1.26.4, we can conclude "
          "that your requirements and scipy==1.9.3 are incompatible.")


def rec(numpy: str, scipy: str, mode: str, outcome: Outcome, error: str = "") -> Record:
    return Record(cell=f"py311-numpy{numpy}-scipy{scipy}-{mode}", base="py311", mode=mode,
                  pins={"numpy": numpy, "scipy": scipy}, outcome=outcome, error=error, run_id="r1")


def test_each_declared_bound_is_judged_by_its_override_cell() -> None:
    records = [
        rec("2.2.6", "1.11.4", "together", Outcome.RESOLVE_CONFLICT, NEEDED),
        rec("2.2.6", "1.11.4", "override", Outcome.IMPORT_ERROR, "imports: ValueError: numpy.dtype size changed"),
        rec("1.26.4", "1.9.3", "together", Outcome.RESOLVE_CONFLICT, STRICT),
        rec("1.26.4", "1.9.3", "override", Outcome.WARN, "imports: UserWarning: A NumPy version >=1.18.5"),
        rec("2.0.2", "1.11.4", "together", Outcome.RESOLVE_CONFLICT, NEEDED.replace("2.2.6", "2.0.2")),
        rec("2.0.2", "1.11.4", "override", Outcome.INFRA_ERROR, "the engine went away"),
        rec("2.2.6", "1.13.0", "together", Outcome.IMPORT_ERROR, "imports: ImportError: numpy.core.multiarray"),
        rec("1.26.4", "1.14.1", "together", Outcome.PASS),
        rec("1.26.4", "1.14.1", "override", Outcome.PASS),
    ]
    got = {(f.requirement, f.verdict) for f in bounds.audit(records)}
    assert got == {("scipy 1.11.4: numpy>=1.21.6,<1.28.0", "needed"),
                   ("scipy 1.9.3: numpy>=1.18.5,<1.26.0", "too strict"),
                   ("scipy 1.11.4: numpy>=1.21.6,<1.28.0", "untested"),  # its override cell has no verdict
                   ("", "missing")}  # the resolver allowed numpy 2.2.6 with scipy 1.13.0, which broke
    md = bounds.markdown(bounds.audit(records))
    assert "| needed | py311 | scipy 1.11.4: numpy>=1.21.6,<1.28.0 |" in md
    assert json.loads(bounds.as_json(bounds.audit(records)))["bounds"][0]["verdict"]


def test_an_override_cell_installs_its_pins_over_what_they_declare(tmp_path) -> None:
    s = spec.parse("bases: {py311: {python: '3.11'}}\npackages: {numpy: ['2.2.6'], scipy: ['1.11.4']}\n"
                   "modes: [together, override]\n", tmp_path / "m.yaml")
    cell = Cell("py311", "override", (("numpy", "2.2.6"), ("scipy", "1.11.4")))
    write, step = install.uv_commands(cell, s, "uv", "/w/venv/bin/python", [])
    assert write[:2] == ["/w/venv/bin/python", "-c"] and write[3:] == ["/w/venv/compat-matrix-overrides.txt",
                                                                        "numpy==2.2.6\nscipy==1.11.4\n"]
    assert step[step.index("--override") + 1] == "/w/venv/compat-matrix-overrides.txt"
    assert step[-2:] == ["numpy==2.2.6", "scipy==1.11.4"]


def test_override_cells_are_no_install_evidence() -> None:
    from matrix.registry import evidence

    records = [rec("2.2.6", "1.11.4", "override", Outcome.IMPORT_ERROR), rec("1.26.4", "1.14.1", "together",
                                                                            Outcome.PASS)]
    assert [r.mode for r in evidence.with_verdict(records)] == ["together"]
