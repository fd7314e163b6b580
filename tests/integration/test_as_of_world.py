"""--as-of against the real index: uv's --exclude-newer through install.uv_commands resolves the
transitive requirements as of that day, and pins are checked against the real index before
anything runs. Small pure-Python packages only (never torch)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from uv import find_uv_bin

from matrix import index, install, spec
from matrix.cells import Cell
from matrix.errors import ConfigError
from matrix.spec import Query
from tests.bounded import bounded as within

AS_OF = dt.date(2023, 6, 1)
BOUND_S = 300  # a hang fails the test instead of stalling CI


def bounded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return within(BOUND_S, fn, *args, **kwargs)


def load(tmp_path: Path, packages: str, as_of: dt.date | None, find_links: str = "") -> spec.Spec:
    p = tmp_path / "matrix.yaml"
    p.write_text(textwrap.dedent(f"""\
        bases: {{host: {{python: "{sys.executable}"}}}}
        packages: {{{packages}}}
        install: {{ca_bundle: auto{find_links}}}
    """))
    return bounded(index.expand, spec.load(p), as_of)


def installed(tmp_path: Path, s: spec.Spec, name: str) -> dict[str, str]:
    """Install the cell with the commands both backends run; the venv's distributions."""
    uv = find_uv_bin()
    venv = tmp_path / name
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    if s.install.ca_bundle is not None:
        env["SSL_CERT_FILE"] = str(s.install.ca_bundle)
    cell = Cell("host", "together", tuple((n, vs[0]) for n, vs in s.packages))
    commands = [[uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                *install.uv_commands(cell, s, uv, str(venv / "bin" / "python"), list(s.install.find_links))]
    for argv in commands:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=BOUND_S)
        assert done.returncode == 0, done.stderr
    listed = subprocess.run([uv, "pip", "list", "--python", str(venv / "bin" / "python"), "--format", "freeze"],
                            env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    return {line.split("==")[0].lower(): line.split("==")[1] for line in listed.splitlines() if "==" in line}


def test_as_of_resolves_transitive_requirements_as_of_that_day(tmp_path: Path) -> None:
    # requests 2.31.0 (2023-05-22) needs urllib3>=1.21.1,<3: the newest such urllib3 by then, not today's
    then = load(tmp_path, "requests: ['2.31.0']", AS_OF)
    assert then.as_of == AS_OF
    urllib3 = bounded(index.fetch, "urllib3", None, then.install.ca_bundle)
    expected = index.pick(urllib3, Query(">=1.21.1,<3"), AS_OF)[-1]
    newest = index.pick(urllib3, Query(">=1.21.1,<3"))[-1]
    assert expected != newest, "the index has no urllib3 newer than the as-of day: pick another day"
    got = installed(tmp_path, then, "then")
    assert got["requests"] == "2.31.0"
    assert got["urllib3"] == expected
    today = installed(tmp_path, load(tmp_path, "requests: ['2.31.0']", None), "today")
    assert today["urllib3"] == newest


def test_pins_are_checked_against_the_real_index(tmp_path: Path) -> None:
    s = load(tmp_path, "numpy: ['1.26.4', '1.99.0']", None)
    with pytest.raises(ConfigError) as info:
        bounded(index.check_releases, s)
    assert info.value.key == "packages.numpy[1]" and info.value.exit_code == 2
    assert "numpy 1.99.0 is not a release on the index; nearest: 1.26.4, 2.0.0" in str(info.value)
    # as of a day before numpy 2.0.0: the pin of a later release is not in that world
    s = load(tmp_path, "numpy: ['1.24.3', '2.0.0']", AS_OF)
    with pytest.raises(ConfigError) as info:
        bounded(index.check_releases, s)
    assert info.value.key == "packages.numpy[1]" and "after --as-of 2023-06-01" in str(info.value)
    assert bounded(index.check_releases, load(tmp_path, "numpy: ['1.24.3'], scipy: ['1.10.1']", AS_OF)) == []


def test_a_local_wheel_the_index_may_not_have_counts(tmp_path: Path) -> None:
    links = os.environ.get("PIP_FIND_LINKS", "")
    wheels = sorted(Path(links).glob("torch-*.whl")) if links and Path(links).is_dir() else []
    if not wheels:
        pytest.skip("no torch wheel in $PIP_FIND_LINKS here")
    version = wheels[0].name.split("-")[1].split("+")[0]
    s = load(tmp_path, f"torch: ['{version}']", None, ", find_links: ['$PIP_FIND_LINKS']")
    assert bounded(index.check_releases, s) == []  # the file name is read; nothing is installed
