"""persistence/serial_thread.py: one thread, calls in order, errors and cancellation as trio's
to_thread would give them (a cancelled caller still waits for the call it handed over)."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from persistence.serial_thread import SerialThread


async def test_calls_run_in_order_on_one_long_lived_thread() -> None:
    worker = SerialThread("t")
    seen: list[tuple[int, int]] = []
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(worker.run, lambda i=i: seen.append((i, threading.get_ident())))
            await trio.sleep(0)
    assert [i for i, _ in seen] == list(range(20))
    assert len({ident for _, ident in seen}) == 1 and seen[0][1] != threading.get_ident()
    worker.stop()


async def test_an_error_in_the_call_reaches_the_caller() -> None:
    worker = SerialThread("t")

    def boom() -> None:
        raise ValueError("from the thread")

    with pytest.raises(ValueError, match="from the thread"):
        await worker.run(boom)
    assert await worker.run(lambda: 7) == 7, "the thread survives a failed call"
    worker.stop()


async def test_a_cancelled_caller_still_waits_for_its_call_to_finish() -> None:
    worker = SerialThread("t")
    finished: list[bool] = []

    def slow() -> None:
        time.sleep(0.2)
        finished.append(True)

    with trio.move_on_after(0.01) as scope:
        await worker.run(slow)
    assert finished == [True], "the call ran to its end before run() returned"
    assert not scope.cancelled_caught or finished
    worker.stop()
