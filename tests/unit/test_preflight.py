"""Preflight on real Dockerfiles (tests/resources/dockerfiles) against real sweep records and the registry."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from matrix import cells, registry, spec
from matrix.errors import EXIT_CONFIG, ConfigError
from matrix.registry import dockerparse, pipcmd, preflight
from tests.unit import real_cells

D = real_cells.DOCKERFILES
REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"
BOOKWORM_IMAGES = {"python:3.11-slim-bookworm": "bookworm-py311"}


@pytest.fixture
def reg() -> registry.Registry:
    return registry.load(REPO_REGISTRY)


def check(name: str, reg: registry.Registry, baseline: str | None = None, records: object = None,
          **options: object) -> tuple[int, str]:
    return preflight.run_preflight(D / name, D / baseline if baseline else None,
                                   real_cells.bookworm() if records is None else records, reg,
                                   **{"images": BOOKWORM_IMAGES, **options})


def lines_of(text: str, level: str) -> list[str]:
    return [ln for ln in text.splitlines() if f": {level}: " in ln]


# --- reading pip commands -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("shell", "verb", "pins", "no_deps"),
    [
        ("pip install numpy==1.24.3 scipy==1.10.1", "install", {"numpy": "1.24.3", "scipy": "1.10.1"}, False),
        ("pip3 install --no-cache-dir -U numpy==1.24.3", "install", {"numpy": "1.24.3"}, False),
        ("python3.11 -m pip --no-cache-dir install --no-deps numpy==2.2.6", "install", {"numpy": "2.2.6"}, True),
        ("uv pip install --system --python /usr/bin/python3 'scipy==1.11.4'", "install", {"scipy": "1.11.4"}, False),
        ("PIP_NO_CACHE_DIR=1 sudo -H /opt/venv/bin/pip install numpy==1.26.4 > /tmp/log 2>&1", "install",
         {"numpy": "1.26.4"}, False),
        ("pip install ./wheels/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl", "install", {"numpy": "1.26.4"},
         False),
        ("pip uninstall -y numpy scipy", "uninstall", {}, False),
    ],
)
def test_pip_command_lines(shell: str, verb: str, pins: dict[str, str], no_deps: bool) -> None:
    [cmd] = pipcmd.parse_shell(shell)
    assert cmd.verb == verb and cmd.no_deps is no_deps
    assert {s.name: s.pin for s in cmd.requirements if s.pin} == pins


def test_non_installer_commands_and_ranges() -> None:
    assert pipcmd.parse_shell("apt-get install -y python3-pip && echo pip install numpy==1.0") == []
    [cmd] = pipcmd.parse_shell('pip install "numpy>=1.24,<2" scipy -r req.txt -c c.txt -e ./src')
    assert [(s.name, s.pin) for s in cmd.requirements] == [("numpy", None), ("scipy", None)]
    assert cmd.requirement_files == ("req.txt",) and cmd.constraint_files == ("c.txt",)
    assert cmd.others == ("./src",)


# --- reading Dockerfiles -------------------------------------------------------------------------

def test_the_v74_3_file_installs_the_fix_together_at_line_21() -> None:
    df = dockerparse.parse(D / "Dockerfile.v74.3")
    assert df.base_image == "python:3.11-slim-bookworm"  # ARG BASE_IMAGE's default
    assert [s.name for s in df.stages] == ["runtime"] and df.from_line == 4
    verbs = [(s.verb, s.line) for s in df.steps]
    assert verbs == [("install", 15), ("uninstall", 20), ("install", 21)]
    first = df.steps[0]
    assert {r.spec.name: (r.spec.pin, r.spec.source) for r in first.installs}["scipy"] == \
        ("1.11.4", "requirements-v74.txt:5")
    eff = dockerparse.effective(df)
    assert eff.pins() == {"numpy": "1.24.3", "scipy": "1.10.1", "soundfile": "0.12.1", "tqdm": "4.66.1",
                          "pyyaml": "6.0.1"}
    assert eff.mode(["numpy", "scipy"]) == "together"
    assert eff.get("numpy").req.line == 21


def test_the_v76_file_layers_numpy_over_scipy_from_a_requirements_file() -> None:
    df = dockerparse.parse(D / "Dockerfile.v76")
    assert df.base_image == "berrylands/multitalk-v75:latest"
    eff = dockerparse.effective(df)
    assert eff.pin("numpy") == "2.2.6" and eff.pin("scipy") == "1.11.4"
    assert eff.mode(["numpy", "scipy"]) == "layered"
    assert [e.req.where() for e in eff.order(["numpy", "scipy"])] == ["line 7 (requirements-v76.txt:3)", "line 11"]


def test_stages_uv_and_constraints() -> None:
    df = dockerparse.parse(D / "Dockerfile.constraints")
    assert [s.name for s in df.chain()] == ["base", "app"]
    assert df.base_image == "python:3.11-slim-bookworm"  # FROM python:${PY}-slim-bookworm
    eff = dockerparse.effective(df)
    assert eff.pin("numpy") == "1.26.4" and eff.mode(["numpy", "scipy"]) == "together"
    assert eff.get("scipy").req.spec.source == "requirements.txt:2, pinned by constraints.txt:2"


def test_no_deps_is_a_forced_layered_step() -> None:
    eff = dockerparse.effective(dockerparse.parse(D / "Dockerfile.layered"))
    assert eff.mode(["numpy", "scipy"]) == "layered"
    [(df_line_scipy), (df_line_numpy)] = [e.req.line for e in eff.order(["numpy", "scipy"])]
    assert (df_line_scipy, df_line_numpy) == (3, 4)


def write_dockerfile(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "Dockerfile"
    p.write_text(textwrap.dedent(text))
    return p


def test_uninstall_removes_a_pin_and_exec_heredoc_and_build_args_are_read(tmp_path: Path) -> None:
    p = write_dockerfile(tmp_path, """\
        ARG NUMPY_VERSION
        FROM debian:bookworm-slim
        ARG NUMPY_VERSION=1.26.4
        RUN ["pip", "install", "scipy==1.11.4", "torch==2.3.1"]
        RUN <<EOF
        set -e
        pip install --no-cache-dir \\
            numpy==${NUMPY_VERSION}
        pip uninstall -y torch
        EOF
        RUN pip install scipy  # already satisfied: the pin stays
        """)
    df = dockerparse.parse(p)
    eff = dockerparse.effective(df)
    assert eff.pins() == {"scipy": "1.11.4", "numpy": "1.26.4"}
    assert eff.get("numpy").req.line == 7 and not eff.present("torch")
    assert dockerparse.effective(dockerparse.parse(p, {"NUMPY_VERSION": "2.2.6"})).pin("numpy") == "2.2.6"


def test_requirement_files_are_found_through_copy_and_bind_mounts(tmp_path: Path) -> None:
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "pins.txt").write_text("numpy==1.26.4\nscipy==1.11.4  # tested together\n")
    (tmp_path / "req.txt").write_text("-r deps/pins.txt\nsoundfile==0.12.1 --hash=sha256:abc\n")
    p = write_dockerfile(tmp_path, """\
        FROM python:3.11-slim-bookworm
        WORKDIR /app
        COPY --chown=app:app req.txt .
        COPY deps/ /opt/deps/
        RUN pip install -r req.txt
        RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,source=deps/pins.txt,target=/mnt/p.txt \\
            pip install -r /mnt/p.txt
        RUN pip install -r /opt/deps/pins.txt
        """)
    steps = dockerparse.parse(p).steps
    assert [(s.line, [(r.spec.name, r.spec.pin, r.spec.source) for r in s.installs]) for s in steps] == [
        (5, [("numpy", "1.26.4", "pins.txt:1"), ("scipy", "1.11.4", "pins.txt:2"),
             ("soundfile", "0.12.1", "req.txt:2")]),
        (7, [("numpy", "1.26.4", "pins.txt:1"), ("scipy", "1.11.4", "pins.txt:2")]),
        (8, [("numpy", "1.26.4", "pins.txt:1"), ("scipy", "1.11.4", "pins.txt:2")]),
    ]


def test_an_unresolved_variable_is_reported_not_guessed(tmp_path: Path) -> None:
    p = write_dockerfile(tmp_path, """\
        FROM python:3.11-slim-bookworm
        RUN pip install numpy==$NUMPY_VERSION scipy==1.11.4
        """)
    df = dockerparse.parse(p)
    assert df.notes == ((2, "numpy==$NUMPY_VERSION: a variable with no value here; pass it with --build-arg"),)
    assert dockerparse.effective(df).pins() == {"scipy": "1.11.4"}


# --- the checks ------------------------------------------------------------------------------------

def test_the_seeds_v76_regression_fix_present_in_baseline_dropped_in_new_file(reg: registry.Registry) -> None:
    code, text = check("Dockerfile.v76", reg, baseline="Dockerfile.v74.3")
    assert code == 1
    errors = lines_of(text, "error")
    carried = [e for e in errors if "not carried forward" in e]
    assert len(carried) == 1
    assert carried[0].startswith(f"{D / 'Dockerfile.v76'}:7: error: fix for known issue numpy_scipy_incompatibility")
    assert f"{D / 'Dockerfile.v74.3'}:21 installs numpy==1.24.3 scipy==1.10.1" in carried[0]
    assert "numpy: 2.2.6 (line 11; wanted 1.24.3)" in carried[0]
    assert "RUN pip uninstall -y numpy scipy && pip install --no-cache-dir numpy==1.24.3 scipy==1.10.1" in text
    failing = [e for e in errors if "fails on bookworm-py311" in e]
    assert len(failing) == 1 and failing[0].startswith(f"{D / 'Dockerfile.v76'}:11: error: numpy 2.2.6 + scipy 1.11.4")
    assert "installed layered: scipy (line 7 (requirements-v76.txt:3)), then numpy (line 11)" in failing[0]
    assert "known issue numpy_scipy_incompatibility" in failing[0]
    assert "fix: pip install numpy==1.24.3 scipy==1.10.1" in text
    assert "newest tested-good on bookworm-py311·layered: numpy 1.26.4 + scipy 1.11.4" in text


def test_the_seeds_v76_with_scipy_left_to_the_base_image(reg: registry.Registry) -> None:
    code, text = check("Dockerfile.v76-dropped", reg, baseline="Dockerfile.v74.3")
    assert code == 1
    [error] = lines_of(text, "error")
    assert ":5: error: fix for known issue numpy_scipy_incompatibility not carried forward" in error
    assert "scipy: not installed by this file" in error
    [warning] = lines_of(text, "warning")
    assert "numpy 2.2.6 (line 5) is pinned but scipy is not" in warning
    assert "fails with scipy 1.11.4 (bookworm-py311·layered): known issue numpy_scipy_incompatibility" in warning
    # Without the baseline, the registry's `requires` still catches it.
    code, text = check("Dockerfile.v76-dropped", reg)
    assert code == 1
    [error] = lines_of(text, "error")
    assert ":5: error: the tested fix of known issue numpy_scipy_incompatibility is not in place" in error


def test_the_working_file_is_clean_where_the_results_show_it_passing(reg: registry.Registry) -> None:
    code, text = check("Dockerfile.v74.3", reg, records=real_cells.venv_sweep(),
                       images={"python:3.11-slim-bookworm": "py311"})
    assert code == 0
    assert lines_of(text, "error") == [] and lines_of(text, "warning") == []
    assert "passes in the results: py311-numpy1.24.3-scipy1.10.1-together" in text
    assert text.rstrip().endswith("0 error(s), 0 warning(s): clean")


def test_a_combination_never_tested_is_a_warning_with_the_command_that_tests_it(
        reg: registry.Registry, tmp_path: Path) -> None:
    code, text = check("Dockerfile.v74.3", reg)
    assert code == 0
    [warning] = lines_of(text, "warning")
    assert warning.startswith(f"{D / 'Dockerfile.v74.3'}:21: warning: numpy 1.24.3 + scipy 1.10.1, installed together")
    assert "was never tested on bookworm-py311" in warning
    assert preflight.run_preflight(D / "Dockerfile.v74.3", None, real_cells.bookworm(), reg,
                                   images=BOOKWORM_IMAGES, strict=True)[0] == 1
    # The printed matrix.yaml lines and --select really name a cell.
    include = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("- {base:")]
    select = re.search(r"--select '([^']+)'", text).group(1)
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(textwrap.dedent("""\
        bases: {bookworm-py311: {image: "python:3.11-slim-bookworm"}}
        packages: {numpy: ["1.26.4"], scipy: ["1.11.4"]}
        modes: [together, layered]
        install: {ca_bundle: none}
        include:
        """) + "".join(f"  {ln}\n" for ln in include))
    plan = cells.plan(spec.load(matrix))
    assert [c.id for c in cells.select(plan.cells, [select])] == [select]


def test_pins_the_results_show_passing_waive_the_registrys_fix(reg: registry.Registry) -> None:
    code, text = check("Dockerfile.constraints", reg)
    assert code == 0 and lines_of(text, "error") == [] and lines_of(text, "warning") == []
    assert "passes in the results: bookworm-py311-numpy1.26.4-scipy1.11.4-together" in text
    assert "differs from the tested fix of numpy_scipy_incompatibility" in text


def test_an_install_after_the_pins_may_move_them(reg: registry.Registry) -> None:
    code, text = check("Dockerfile.layered", reg)
    assert code == 0
    [warning] = lines_of(text, "warning")
    assert warning.startswith(f"{D / 'Dockerfile.layered'}:5: warning: installs opencv-python-headless after the pins")
    assert "passes in the results: bookworm-py311-numpy1.26.4-scipy1.11.4-layered" in text


def test_a_named_base_and_an_unknown_from_image(reg: registry.Registry) -> None:
    _, text = check("Dockerfile.v76", reg, images={})
    assert "FROM berrylands/multitalk-v75:latest is not a base of the matrix" in text
    _, text = check("Dockerfile.v76", reg, base="bookworm-py311")
    assert "not a base of the matrix" not in text and "fails on bookworm-py311" in text
    _, text = check("Dockerfile.v76", reg, base="jammy-cuda121")
    assert "the results have no cell on base jammy-cuda121" in text


def test_no_results_still_checks_the_registry_and_the_baseline(reg: registry.Registry) -> None:
    code, text = check("Dockerfile.v76", reg, baseline="Dockerfile.v74.3", records=[])
    assert code == 1
    assert "no results to check the pins against" in text
    assert "not carried forward" in text


@pytest.mark.parametrize(
    ("name", "baseline", "names"),
    [
        ("Dockerfile.missing-requirements", None, "requirements-gone.txt"),
        ("Dockerfile.nope", None, "Dockerfile.nope"),
        ("Dockerfile.v76", "Dockerfile.gone", "Dockerfile.gone"),
    ],
)
def test_unreadable_input_exits_2_naming_the_file(reg: registry.Registry, name: str, baseline: str | None,
                                                  names: str) -> None:
    code, text = check(name, reg, baseline=baseline)
    assert code == EXIT_CONFIG
    assert names in text and "fix:" in text
    with pytest.raises(ConfigError):
        preflight.preflight(D / name, D / baseline if baseline else None, [], reg)
