"""Injected time: every timer, lease and timeout reads ``clock.now()`` (epoch seconds).

``SystemClock`` is wall time. ``TrioClock`` follows trio's clock from a fixed epoch, so
tests run under ``trio.testing.MockClock`` (autojump) and a one-hour timeout costs no
real time.
"""

from __future__ import annotations

import time

import trio


class SystemClock:
    def now(self) -> float:
        return time.time()


class TrioClock:
    def __init__(self, epoch: float = 1_800_000_000.0) -> None:
        self.epoch = epoch

    def now(self) -> float:
        return self.epoch + trio.current_time()


async def sleep_until(clock: SystemClock | TrioClock, deadline: float) -> None:
    await trio.sleep(max(0.0, deadline - clock.now()))
