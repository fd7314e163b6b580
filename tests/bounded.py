"""A call that must not hang: run it in a thread and fail the test when it outlasts its bound."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest


def bounded(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), failing the test when it is still running after `seconds` (a hang)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {seconds} s")
    if "error" in out:
        raise out["error"]
    return out["value"]
