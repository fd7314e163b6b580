"""The cycle collector held off while objects are made by the hundred thousand.

Planning a large matrix, reading a merge's shard records and writing their table make millions of
objects (cells, records, their dicts and strings, lines) and no reference cycles among them. The
collector runs whenever allocations outnumber frees by a few hundred, and every so often walks every
live object: on a 100 000-cell merge, a second of passes that find nothing. Garbage with cycles
made meanwhile is collected when the pause ends. The bottom layer: imports nothing from the package.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside (nested pauses end with the outermost; one where the collector was
    off already leaves it off)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
