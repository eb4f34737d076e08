"""How messages reach a run actor and answers come back, and why a delivery can fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from . import messages as m


class Reply:
    __slots__ = ("event", "value", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(slots=True)
class Letter:
    """A message in the mailbox, with where its answer goes (None: nobody waits)."""

    message: m.Message
    reply: Reply | None = None
    trace: Any = None  # the sender's trace context: the run's work for it (its commit) joins that trace


class RunNotFound(Exception):
    pass


class NotOwner(Exception):
    """This node does not own the run's shard (any more)."""


class RunUnavailable(Exception):
    """The run's journal could not be folded; the failure is logged and retried later."""


class NotReady(Exception):
    """The actor cannot answer a read at once (loading, or a commit in flight): use the mailbox."""


class RunDamaged(RunUnavailable):
    """Records of the run cannot be decoded: it serves nothing but terminate until it is closed."""
