"""Signed requests are accepted once: a cache of the signatures already seen.

A signature is valid for the timestamp window (±5 minutes), so a captured request can be
sent again within it — to the same node, to another node of the cluster, or to the same node
after a restart. ``ReplayGuard`` records each accepted signature in the journal
(``journal.claim_once``: PostgreSQL for a cluster, the SQLite journal on one node), so the
first use wins everywhere and a restart forgets nothing. Claims arriving together share one
statement (the same batching as the journal's group commit), and an in-memory
``ReplayCache`` in front refuses local repeats without a round trip.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import trio

from persistence.clock import Clock
from persistence.group_commit import next_group
from persistence.journal import Journal

log = logging.getLogger("dw.replay")

PURGE_EVERY_SECONDS = 60.0


class ReplayCache:
    """Keys seen until their expiry; bounded, oldest forgotten first (in memory, one process)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def seen(self, key: bytes, now: float, expires_at: float) -> bool:
        """True if ``key`` was seen and has not expired; otherwise remember it and answer False."""
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry > now and len(self._seen) < self.capacity:
                break
            del self._seen[oldest]
        expiry = self._seen.get(key)
        if expiry is not None and expiry > now:
            return True
        self._seen[key] = expires_at
        return False


class ReplayUnavailable(Exception):
    """The shared cache could not be asked (the database is unreachable): refuse for now."""


class _Claim:
    __slots__ = ("key", "expires_at", "done", "first", "error")

    def __init__(self, key: bytes, expires_at: float) -> None:
        self.key = key
        self.expires_at = expires_at
        self.done = trio.Event()
        self.first = False
        self.error: BaseException | None = None


class ReplayGuard:
    def __init__(self, journal: Journal, clock: Clock, *, max_batch: int = 512) -> None:
        self.journal = journal
        self.clock = clock
        self.max_batch = max_batch
        self.local = ReplayCache()
        self._send, self._recv = trio.open_memory_channel[_Claim](10_000)
        self._next_purge = 0.0

    async def first_use(self, key: bytes, expires_at: float) -> bool:
        """True exactly once per key within its window, whichever node or process asks."""
        if self.local.seen(key, self.clock.now(), expires_at):
            return False
        claim = _Claim(key, expires_at)
        await self._send.send(claim)
        await claim.done.wait()
        if claim.error is not None:
            raise ReplayUnavailable(str(claim.error)) from claim.error
        return claim.first

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The claim writer: one statement for every claim waiting; a failed round fails only its claims."""
        task_status.started()
        while True:
            group = await next_group(self._recv, self.max_batch)
            now = self.clock.now()
            purge = now >= self._next_purge
            try:
                with trio.CancelScope(shield=True):
                    first = await self.journal.claim_once([(c.key, c.expires_at) for c in group], now if purge else None)
                for claim, ok in zip(group, first, strict=True):
                    claim.first = ok
                if purge:
                    self._next_purge = now + PURGE_EVERY_SECONDS
            except Exception as exc:  # noqa: BLE001 - the callers answer 503 and the client retries
                log.warning("replay cache: recording %d signature(s) failed: %s", len(group), exc)
                for claim in group:
                    claim.error = exc
                    self.local._seen.pop(claim.key, None)  # not recorded: a retry may use it
            finally:
                for claim in group:
                    claim.done.set()
