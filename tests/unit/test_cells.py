"""Cell expansion, ids, include/exclude, selection, and what each mode installs."""

from __future__ import annotations

from pathlib import Path

from matrix import cells, install
from matrix.backends import dockerfile

MATRIX = """
bases:
  bookworm-py311: {image: "python:3.11-slim-bookworm"}
  jammy-cuda121:
    image: "nvidia/cuda:12.1.1-runtime-ubuntu22.04"
    setup: ["apt-get update", "apt-get install -y python3.10 python3.10-venv"]
    python: /usr/bin/python3.10
packages:
  numpy: ["1.26.4", "2.2.6"]
  scipy: ["1.11.4", "1.14.1"]
modes: [together, layered]
layered_order: [scipy, numpy]
exclude:
  - {base: jammy-cuda121, numpy: "2.2.6", reason: "not needed"}
include:
  - {base: bookworm-py311, mode: layered, numpy: "1.24.3", scipy: "1.10.1"}
  - {base: bookworm-py311, mode: together, numpy: "1.26.4", scipy: "1.11.4"}
install: {ca_bundle: none}
"""


def test_product_less_excludes_plus_includes(make_spec) -> None:
    plan = cells.plan(make_spec(MATRIX))
    ids = [c.id for c in plan.cells]
    # 2 bases × 4 pin pairs × 2 modes = 16; 4 excluded; 1 new include, 1 include already there.
    assert len(ids) == 16 - 4 + 1
    assert len(set(ids)) == len(ids)
    assert "bookworm-py311-numpy2.2.6-scipy1.11.4-layered" in ids
    assert "bookworm-py311-numpy1.24.3-scipy1.10.1-layered" in ids
    assert not any(i.startswith("jammy-cuda121-numpy2.2.6") for i in ids)
    assert {e.reason for e in plan.excluded} == {"not needed"}
    assert len(plan.excluded) == 4


def test_ids_are_stable_and_readable(make_spec) -> None:
    a = cells.plan(make_spec(MATRIX)).cells
    b = cells.plan(make_spec(MATRIX)).cells
    assert [c.id for c in a] == [c.id for c in b]
    assert a[0].id == "bookworm-py311-numpy1.26.4-scipy1.11.4-together"


def test_a_planned_cell_is_the_cell_of_its_base_pins_and_mode(make_spec) -> None:
    """The planner writes each id itself: it must be the id the cell makes of itself."""
    plan = cells.plan(make_spec(MATRIX))
    for c in (*plan.cells, *(e.cell for e in plan.excluded)):
        fresh = cells.Cell(c.base, c.mode, c.pins)
        assert c == fresh and hash(c) == hash(fresh) and c.id == fresh.id


def test_select_by_glob(make_spec) -> None:
    plan = cells.plan(make_spec(MATRIX))
    assert all(c.base == "jammy-cuda121" for c in cells.select(plan.cells, ["jammy-*"]))
    chosen = cells.select(plan.cells, ["*-layered", "jammy-*-together"])
    assert {c.mode for c in chosen if c.base == "bookworm-py311"} == {"layered"}
    assert cells.select(plan.cells, None) == plan.cells
    assert cells.select(plan.cells, ["nothing"]) == ()


def test_together_is_one_installer_call(make_spec) -> None:
    s = make_spec(MATRIX)
    cell = cells.Cell("bookworm-py311", "together", (("numpy", "2.2.6"), ("scipy", "1.11.4")))
    (step,) = install.steps(cell, s, [])
    assert step.args == ("install", "--only-binary=:all:", "numpy==2.2.6", "scipy==1.11.4")


def test_layered_follows_the_order_and_forces_later_steps(make_spec) -> None:
    s = make_spec(MATRIX)
    cell = cells.Cell("bookworm-py311", "layered", (("numpy", "2.2.6"), ("scipy", "1.11.4")))
    first, second = install.steps(cell, s, ["/w"])
    assert first.args == ("install", "--only-binary=:all:", "--find-links", "/w", "scipy==1.11.4")
    assert second.args == ("install", "--only-binary=:all:", "--find-links", "/w", "--no-deps", "numpy==2.2.6")


def test_prefix_labels_right_after_from_and_copies_ca_after_apt(make_spec, tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("pem")
    uv = tmp_path / "uv"
    uv.write_text("uv")
    s = make_spec(MATRIX.replace("ca_bundle: none", f"ca_bundle: {pem}"))
    ctx = dockerfile.prefix(s.base("jammy-cuda121"), s, uv, {"org.compat-matrix.run": "cache"})
    lines = ctx.dockerfile.splitlines()
    assert lines[0] == "FROM nvidia/cuda:12.1.1-runtime-ubuntu22.04"
    assert lines[1] == 'LABEL org.compat-matrix.run="cache"'
    apt = lines.index("RUN apt-get install -y python3.10 python3.10-venv")
    assert apt < lines.index(f"COPY ca-bundle.pem {dockerfile.CA_PATH}")
    assert lines[-1] == f"COPY probes {dockerfile.PROBES_DIR}"  # last: a probe change rebuilds one layer
    assert ctx.files["ca-bundle.pem"] == pem and ctx.files["uv"] == uv and "probes/_driver.py" in ctx.files
    digest = ctx.digest()
    pem.write_text("another pem")
    assert ctx.digest() != digest  # the prefix image is rebuilt when a file of it changes
    out = tmp_path / "ctx"
    ctx.write(out)
    assert (out / "Dockerfile").read_text() == ctx.dockerfile
    assert (out / "probes" / "imports.py").is_file()


def test_reproduce_dockerfile_installs_layered_in_a_venv(make_spec, tmp_path: Path) -> None:
    s = make_spec(MATRIX)
    cell = cells.Cell("jammy-cuda121", "layered", (("numpy", "1.26.4"), ("scipy", "1.11.4")))
    lines = dockerfile.context(cell, s, tmp_path / "uv").dockerfile.splitlines()
    venv = lines.index(f"RUN {dockerfile.UV} venv --quiet --python /usr/bin/python3.10 {dockerfile.VENV}")
    assert lines.index("RUN apt-get install -y python3.10 python3.10-venv") < venv
    installs = [ln for ln in lines if " pip install " in ln]
    assert lines.index(installs[0]) > venv
    assert installs[0].endswith("scipy==1.11.4") and installs[1].endswith("--no-deps numpy==1.26.4")


def test_only_the_cells_wheels_enter_the_context(make_spec, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"w")
    (wheels / "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"w")
    s = make_spec(MATRIX.replace("install: {ca_bundle: none}", f"install: {{ca_bundle: none, find_links: [{wheels}]}}"))
    cell = cells.Cell("bookworm-py311", "together", (("numpy", "1.26.4"),))
    ctx = dockerfile.context(cell, s, tmp_path / "uv")
    assert [n for n in ctx.files if n.startswith("find-links")] == [
        "find-links-0/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl"]
    assert "--find-links /opt/compat-matrix/find-links-0" in ctx.dockerfile
    assert list(dockerfile.cell_wheels(cell, s)) == [
        "/opt/compat-matrix/find-links-0/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl"]


def test_credentials_are_redacted() -> None:
    text = "pip install --index-url https://alice:s3cret@pypi.corp/simple numpy --extra-index-url http://tok@x/y"
    assert install.redact(text) == (
        "pip install --index-url https://***@pypi.corp/simple numpy --extra-index-url http://***@x/y")


def test_shards_partition_the_cells_evenly_and_the_same_way_every_time(make_spec) -> None:
    import pytest

    plan = cells.plan(make_spec(MATRIX))
    parts = [cells.shard(plan.cells, k, 3) for k in (1, 2, 3)]
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in plan.cells)
    assert sorted(len(p) for p in parts) == [4, 4, 5]  # 13 cells
    for p in parts:  # a shard keeps the plan's order
        assert list(p) == [c for c in plan.cells if c in p]
    assert cells.parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b", "2/0"):
        with pytest.raises(ValueError):
            cells.parse_shard(bad)
    with pytest.raises(ValueError):
        cells.shard(plan.cells, 4, 3)


def test_shard_sizes_differ_by_at_most_one_for_many_sizes() -> None:
    import random

    rng = random.Random(12)
    for count in (0, 1, 2, 5, 13, 64, 97, 250):
        some = tuple(cells.Cell(f"b{i % 7}", "together", (("numpy", f"1.{i}.{rng.randrange(9)}"),))
                     for i in range(count))
        for n in (1, 2, 3, 4, 7, 10, 16, 300):
            parts = [cells.shard(some, k, n) for k in range(1, n + 1)]
            ids = [c.id for p in parts for c in p]
            assert sorted(ids) == sorted(c.id for c in some), (count, n)  # each cell in exactly one shard
            sizes = [len(p) for p in parts]
            assert max(sizes) - min(sizes) <= 1, (count, n, sizes)
            # The split depends on the set of ids only: the same in any order they are planned in.
            shuffled = list(some)
            rng.shuffle(shuffled)
            for k in range(1, n + 1):
                assert set(cells.shard(tuple(shuffled), k, n)) == set(parts[k - 1])
