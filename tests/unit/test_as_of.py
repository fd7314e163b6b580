"""--as-of is the whole world as of that day: the expanded Spec carries it and every uv command
of every step excludes what the indexes got later (transitive requirements included)."""

from __future__ import annotations

import datetime as dt

from matrix import install
from matrix.cells import Cell
from matrix.index import expand

MATRIX = """
bases: {b: {python: "3.11"}}
packages: {numpy: ["1.26.4"], scipy: ["1.11.4"]}
modes: [together, layered]
install: {ca_bundle: none, index_url: "https://user:tok@mirror.invalid/simple"}
"""


def test_expand_carries_the_day_without_specifier_axes(make_spec) -> None:
    s = make_spec(MATRIX)
    assert s.as_of is None and expand(s).as_of is None
    assert expand(s, dt.date(2023, 6, 1)).as_of == dt.date(2023, 6, 1)
    assert expand(s, dt.date(2023, 6, 1)).packages == s.packages


def test_every_step_of_every_mode_excludes_later_uploads(make_spec) -> None:
    s = expand(make_spec(MATRIX), dt.date(2023, 6, 1))
    assert install.exclude_newer(dt.date(2023, 6, 1)) == "2023-06-02T00:00:00Z"  # the day itself counts
    assert install.exclude_newer(dt.date(2023, 12, 31)) == "2024-01-01T00:00:00Z"
    pins = (("numpy", "1.26.4"), ("scipy", "1.11.4"))
    for mode in ("together", "layered"):
        for in_config in (False, True):
            for offline in (False, True):
                commands = install.uv_commands(Cell("b", mode, pins), s, "uv", "v/bin/python", [],
                                               index_in_config=in_config, offline=offline)
                assert len(commands) == (1 if mode == "together" else 2)
                for argv in commands:
                    i = argv.index("--exclude-newer")
                    assert argv[i + 1] == "2023-06-02T00:00:00Z"
                    assert argv[-1].startswith(("numpy==", "scipy=="))  # an option, not taken as a pin


def test_without_a_day_nothing_is_excluded(make_spec) -> None:
    s = expand(make_spec(MATRIX))
    argv = install.uv_commands(Cell("b", "together", (("numpy", "1.26.4"),)), s, "uv", "py", [])[0]
    assert not any("exclude-newer" in a for a in argv)


def test_the_printed_recipe_carries_the_day(make_spec) -> None:
    """`compat-matrix reproduce` prints these commands: the Dockerfile of a cell carries it too."""
    from matrix.backends import dockerfile

    s = expand(make_spec(MATRIX.replace('{python: "3.11"}', '{image: "python:3.11-slim", python: "3.11"}')),
               dt.date(2023, 6, 1))
    lines = dockerfile.install_commands(Cell("b", "layered", (("numpy", "1.26.4"), ("scipy", "1.11.4"))), s, "/v")
    assert all("--exclude-newer" in argv and "2023-06-02T00:00:00Z" in argv for argv in lines)
