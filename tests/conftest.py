"""Fixtures for every test: the tool's caches kept apart from the machine's, and Ctrl-C as a
terminal gives it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

# A shell without job control starts a background command (`bash .ci/run &`) with SIGINT ignored,
# and Python then raises no KeyboardInterrupt, nor does `_thread.interrupt_main()`; every process a
# test starts would inherit it. The tests of interrupts send SIGINT as a terminal's Ctrl-C does.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the tool keeps between runs (verdicts, interpreter versions, bytecode) goes to a scratch
    directory for the session, not the machine's ~/.cache (nor an earlier session's)."""
    before = os.environ.get("COMPAT_MATRIX_CACHE")
    os.environ["COMPAT_MATRIX_CACHE"] = str(tmp_path_factory.mktemp("compat-matrix-cache"))
    yield
    if before is None:
        os.environ.pop("COMPAT_MATRIX_CACHE", None)
    else:
        os.environ["COMPAT_MATRIX_CACHE"] = before
