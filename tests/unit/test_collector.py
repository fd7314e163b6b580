"""The cycle collector's pause: off inside, as it was after, whatever happens inside."""

from __future__ import annotations

import gc

from matrix import collector


def test_the_collector_is_off_inside_and_back_after_the_outermost_pause() -> None:
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause does not end the outer one
    assert gc.isenabled()


def test_an_error_inside_ends_the_pause_and_a_collector_left_off_stays_off() -> None:
    try:
        with collector.paused():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
