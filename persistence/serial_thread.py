"""One long-lived thread that runs the functions given to it, one at a time, in order.

Why not ``trio.to_thread.run_sync``: its thread cache hands each call to an idle worker, and
when the previous call's worker has not yet put itself back (it does so after delivering its
result, which is exactly when the next group commit arrives) it starts a new thread, and
``Thread.start`` blocks the trio loop until that thread runs. Measured under the request
benchmark, the loop spent ~8 % of its time there. The journal's calls are serial anyway
(one SQLite connection each for writes and reads), so one dedicated thread per connection
does the same work without any thread start on the hot path.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class SerialThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread; waits for it even if cancelled (it runs to the end
        anyway, and a caller must not believe a commit failed that did not)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        result: list[outcome.Outcome[T]] = []

        def job() -> None:
            result.append(outcome.capture(fn, *args))
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass  # the loop is gone: nobody waits for this answer

        self._jobs.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        return result[0].unwrap()

    def stop(self) -> None:
        """Let the thread end once the jobs already given are done."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
