from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from matrix import paths, spec
from matrix.backends import interpreters
from tests.unit import schema_harvest  # records what the validators see, for test_schemas.py


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_schemas.py runs last: it checks the JSON Schemas against every document the other tests
    gave the validators in this session."""
    items.sort(key=lambda item: item.path.name == "test_schemas.py")


def pytest_sessionfinish(session: pytest.Session) -> None:
    schema_harvest.dump()


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[[str], spec.Spec]:
    def make(text: str) -> spec.Spec:
        p = tmp_path / "matrix.yaml"
        p.write_text(textwrap.dedent(text))
        return spec.load(p)

    return make


def interpreter(version: str) -> interpreters.Interpreter:
    """pyenv's python<version>: our machines have 3.6-3.13; missing, the test fails on CI and skips
    elsewhere."""
    found = interpreters.find(version)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"python{version} is missing (pyenv has 3.6-3.13 on our machines)")
        pytest.skip(f"no python{version} here")
    return found


def inode_flags(path: Path) -> int:
    """A directory's inode flags (FS_IOC_GETFLAGS, as `lsattr -d` reads them)."""
    import fcntl
    import struct

    fd = os.open(path, os.O_RDONLY)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, paths.FS_IOC_GETFLAGS, struct.pack("i", 0)))[0])
    finally:
        os.close(fd)


def on_ext(path: Path) -> bool:
    """Whether `path` is on an ext2/3/4 file system (`stat -f` names them all "ext2/ext3"), which
    has the TOPDIR flag (paths.spread)."""
    import subprocess

    kind = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True).stdout
    return kind.startswith("ext")
