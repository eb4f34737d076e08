"""Injected time: every timer, lease and timeout reads ``clock.now()`` (epoch seconds).

``SystemClock`` is wall time. ``TrioClock`` follows trio's clock from a fixed epoch, so
tests run under ``trio.testing.MockClock`` (autojump) and a one-hour timeout costs no
real time. Both are ``Clock``s; the protocol and ``SystemClock`` live in
``persistence.clock`` (the lowest layer that reads the time) and are re-exported here.
"""

from __future__ import annotations

import trio

from persistence.clock import Clock, SystemClock

__all__ = ["Clock", "SystemClock", "TrioClock", "sleep_until"]


class TrioClock:
    """``epoch`` plus trio's current time: under ``MockClock`` it moves only as the test lets it."""

    def __init__(self, epoch: float = 1_800_000_000.0) -> None:
        self.epoch = epoch

    def now(self) -> float:
        return self.epoch + trio.current_time()


async def sleep_until(clock: Clock, deadline: float) -> None:
    await trio.sleep(max(0.0, deadline - clock.now()))


# Checked by mypy: both clocks satisfy the protocol (a drifted signature fails the type check).
_CLOCKS: tuple[type[Clock], ...] = (SystemClock, TrioClock)
