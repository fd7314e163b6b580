"""check's pure parts: target ids and order, the labelled Dockerfile and its build steps (a real
classic-builder log), per-step drift, lineage against the real registry, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix import check, registry
from matrix.backends import imagecheck
from matrix.backends.engine import CHECK, ROLE_LABEL, RUN_LABEL, liveness
from matrix.errors import EXIT_CONFIG, ConfigError
from matrix.lineage import Checked, StepDrift, carries, drift, format_lineage, lineage, natural_key, target_id
from matrix.store import Outcome

DATA = Path(__file__).parent / "data" / "check"
REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry" / "known-issues.yaml"
LABELS = {RUN_LABEL: "20261130T082201Z-58cd9c", ROLE_LABEL: CHECK}


def test_natural_version_order() -> None:
    ids = ["v77-numpy-fix", "v100", "v75", "v74.3", "v76"]
    assert sorted(ids, key=natural_key) == ["v74.3", "v75", "v76", "v77-numpy-fix", "v100"]


@pytest.mark.parametrize(("target", "dockerfile", "expected"), [
    ("docker/Dockerfile.v76", True, "v76"),
    ("Dockerfile.v77-numpy-fix", True, "v77-numpy-fix"),
    ("services/api/Dockerfile", True, "api"),
    ("v78.Dockerfile", True, "v78"),
    ("test:v78", False, "v78"),
    ("berrylands/multitalk-v77:numpy-fix", False, "numpy-fix"),
    ("registry.local:5000/team/app", False, "app"),
    ("team/app:latest", False, "app"),
    ("ctx/Dockerfile...", True, "image"),
    ("Dockerfile.-v1-", True, "v1"),
    ("Dockerfile." + "x" * 300, True, "x" * 100),
])
def test_target_ids(target: str, dockerfile: bool, expected: str) -> None:
    assert target_id(target, is_dockerfile=dockerfile) == expected


def test_targets_are_checked_in_version_order(tmp_path: Path) -> None:
    for v in ("v100", "v74.3", "v76"):
        (tmp_path / f"Dockerfile.{v}").write_text("FROM x\n", encoding="utf-8")
    got = check.targets(tuple(sorted(str(p) for p in tmp_path.iterdir())) + ("test:v78",))
    assert [t.id for t in got] == ["v74.3", "v76", "v78", "v100"]
    assert got[2].dockerfile is None


def test_bad_targets_and_build_args(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such Dockerfile") as e:
        check.targets((str(tmp_path / "Dockerfile.v9"),))
    assert e.value.exit_code == EXIT_CONFIG
    with pytest.raises(ConfigError, match="neither a file nor an image reference"):
        check.targets(("app:v1; rm -rf /",))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Dockerfile.v1").write_text("FROM x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"same id \(v1\)"):
        check.targets((str(tmp_path / "a" / "Dockerfile.v1"), "app:v1"))
    assert check.build_args(["A=1", "B=x=y", "C="]) == (("A", "1"), ("B", "x=y"), ("C", ""))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        check.build_args(["NOVALUE"])
    assert check.repository("team/app-check") == "team/app-check"
    for bad in ("Team/App", "app:tag", "a b", "-x", ""):
        with pytest.raises(ConfigError, match="not a repository name"):
            check.repository(bad)


def test_labelled_dockerfile_maps_build_steps_to_the_users_lines() -> None:
    text = (DATA / "Dockerfile.v76").read_text(encoding="utf-8")
    rewritten, steps = imagecheck.labelled(text, LABELS)
    label = 'LABEL org.compat-matrix.role="check" org.compat-matrix.run="20261130T082201Z-58cd9c"'
    assert rewritten.splitlines()[1] == label
    # The real log of that build (classic builder, one step cached, two run).
    found = imagecheck.layers((DATA / "v76-build.log").read_text(encoding="utf-8"), steps)
    assert [(ins.line, ins.keyword, image) for ins, image in found] == [
        (1, "FROM", "be85e308bb66"), (2, "COPY", "bdb7621f413e"), (3, "ENV", "dbd15c778fb8"),
        (4, "RUN", "4004587955fa"), (5, "RUN", "dde59d411bb7"), (6, "RUN", "7231d88e309d")]


def test_instructions_follow_continuations_comments_and_stages() -> None:
    text = ("# syntax=docker/dockerfile:1\nARG V=1\nFROM base AS build\nRUN pip install \\\n"
            "    # a comment inside\n    numpy==2.2.6\n\nFROM \\\n  build\nCMD [\"python\"]\n")
    got = [(i.line, i.keyword, i.text) for i in imagecheck.instructions(text)]
    assert got == [(2, "ARG", "ARG V=1"), (3, "FROM", "FROM base AS build"),
                   (4, "RUN", "RUN pip install numpy==2.2.6"), (8, "FROM", "FROM build"), (10, "CMD", 'CMD ["python"]')]
    rewritten, steps = imagecheck.labelled(text, LABELS)
    lines = rewritten.splitlines()
    assert lines[3].startswith("LABEL ") and lines[10].startswith("LABEL ") and lines[9] == "  build"
    assert [s.keyword if s else None for s in steps[1:]] == ["ARG", "FROM", None, "RUN", "FROM", None, "CMD"]


def test_build_failures() -> None:
    path = Path("Dockerfile.v9")
    copy = imagecheck.Built(False, "Step 2/3 : COPY missing.txt /x\n", "COPY failed: file not found in build "
                            "context or excluded by .dockerignore: stat missing.txt: file does not exist")
    assert imagecheck.build_failure(copy, path).outcome is Outcome.BUILD_ERROR
    pull = imagecheck.Built(False, "Step 1/2 : FROM team/app:v1\n", "pull access denied for team/app, repository "
                            "does not exist or may require 'docker login'")
    assert imagecheck.build_failure(pull, path).outcome is Outcome.INFRA_ERROR
    log = (DATA.parent / "pip-no-matching-distribution.log").read_text(encoding="utf-8")
    run = imagecheck.Built(False, "Step 5/5 : RUN pip install numpy==1.99.0\n ---> Running in 1\n" + log,
                           "The command '/bin/sh -c pip install numpy==1.99.0' returned a non-zero code: 1")
    v = imagecheck.build_failure(run, path)
    assert v.outcome is not Outcome.INFRA_ERROR and "pip install numpy==1.99.0" in v.error


def test_drift_names_the_replacement_and_what_it_breaks() -> None:
    before = {"numpy": ("1.26.4", ()), "scipy": ("1.11.4", ("numpy<1.28.0,>=1.21.6",)), "pip": ("23.0.1", ())}
    after = {"numpy": ("2.2.6", ()), "scipy": ("1.11.4", ("numpy<1.28.0,>=1.21.6",)), "pip": ("23.0.1", ())}
    step = StepDrift(9, "pip install numpy==2.2.6", tuple(drift(before, after)))
    assert step.describe() == ("RUN line 9 (`pip install numpy==2.2.6`) replaced numpy 1.26.4 → 2.2.6 under "
                               "scipy 1.11.4 (which requires numpy<1.28.0,>=1.21.6)")
    up = drift({"numpy": ("1.24.3", ())}, {"numpy": ("1.26.4", ()), "SciPy": ("1.10.1", ('numpy; extra == "x"',))})
    assert [c.describe() for c in up] == ["upgraded numpy 1.24.3 → 1.26.4", "added SciPy 1.10.1"]
    assert [c.describe() for c in drift({"pip": ("23.0.1", ())}, {})] == ["removed pip 23.0.1"]
    assert drift(after, after) == []


def test_lineage_of_the_seed_series() -> None:
    reg = registry.load(REPO_REGISTRY)
    fix = {"numpy": "1.24.3", "scipy": "1.10.1"}
    issue = reg.get("numpy_scipy_incompatibility")
    assert issue is not None and carries(issue, fix) and not carries(issue, {"numpy": "1.24.3"})
    v76_step = StepDrift(9, "pip install numpy==2.2.6", tuple(drift(
        {"numpy": ("1.26.4", ()), "scipy": ("1.11.4", ("numpy<1.28.0",))},
        {"numpy": ("2.2.6", ()), "scipy": ("1.11.4", ("numpy<1.28.0",))})))
    series = [
        Checked("v77-numpy-fix", Outcome.PASS, dict(fix), [], 1, "team/app:v74.3"),
        Checked("v76", Outcome.IMPORT_ERROR, {"numpy": "2.2.6", "scipy": "1.11.4"}, [v76_step], 3, "team/app:v75"),
        Checked("v74.3", Outcome.PASS, dict(fix),
                [StepDrift(5, "pip install numpy==1.24.3 scipy==1.10.1", tuple(drift({}, {
                    "numpy": ("1.24.3", ()), "scipy": ("1.10.1", ())})))], 1, "python:3.11"),
        Checked("v75", Outcome.IMPORT_ERROR, {"numpy": "2.2.6", "scipy": "1.11.4"}, [], 1, "team/broken:base"),
    ]
    entries = {e.id: e for e in lineage(series, reg.issues)}
    assert [e.id for e in lineage(series, reg.issues)] == ["v74.3", "v75", "v76", "v77-numpy-fix"]
    assert entries["v74.3"].carried == ("numpy_scipy_incompatibility",) and entries["v74.3"].inherited == ()
    assert entries["v77-numpy-fix"].inherited == ("numpy_scipy_incompatibility",)
    assert entries["v75"].last_working == entries["v76"].last_working == "v74.3"
    assert entries["v77-numpy-fix"].last_working == "v74.3"
    (m76,) = entries["v76"].missing
    assert m76.where.startswith("RUN line 9 (`pip install numpy==2.2.6`) replaced numpy 1.26.4 → 2.2.6")
    (m75,) = entries["v75"].missing
    assert m75.where == "inherited through FROM team/broken:base (line 1); no step of its own sets it"
    text = "\n".join(format_lineage(list(entries.values())))
    assert "Last version that worked: v77-numpy-fix." in text
    assert ("- v76: fix not carried forward: numpy_scipy_incompatibility (numpy==1.24.3 scipy==1.10.1) "
            "was in v74.3") in text


def test_a_check_in_progress_is_alive_to_other_runs() -> None:
    now = 1_000_000.0

    def image(run: str, created: float, role: str | None = CHECK) -> dict[str, object]:
        return {"Labels": {RUN_LABEL: run, **({ROLE_LABEL: role} if role else {})}, "Created": created}

    got = liveness([], [image("checking", now - 60), image("killed-yesterday", now - 86_400),
                        image("sweep-image", now - 60, None)], now)
    assert got == {"checking": True, "killed-yesterday": False, "sweep-image": False}



def test_an_unreadable_dockerfile_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.v1").write_bytes(b"FROM x\n\xff\xfe RUN pip install numpy\n")
    with pytest.raises(ConfigError, match="cannot read it") as e:
        check.targets((str(tmp_path / "Dockerfile.v1"),))
    assert e.value.exit_code == EXIT_CONFIG
