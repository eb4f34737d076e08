"""One place that knows where things live: for a run, a shard or a task queue, here or which
member — and how to reach that member without hanging when it does not answer.

A shard's owner comes from the directory the shard manager refreshes each second; a member
that stops answering the health probes (``Peers``) counts as no owner at all. Calls and
forwarded requests follow the directory: if the owner does not answer within
``PEER_TIMEOUT``, or the directory moves the shard while the request is open, the router
tries the new owner; when no reachable owner appears within the budget it raises
``Unreachable`` and the caller answers 503 with Retry-After — never the client's own timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from persistence.ids import shard_of_run

from .errors import ForwardTo
from .peers import PeerError

log = logging.getLogger("dw.router")

PEER_TIMEOUT = 2.0  # a quick node call not answered in this time: that member is not answering
OWNER_BUDGET = 6.0  # how long a call or a forwarded request waits for a shard to have a reachable owner
WATCH_INTERVAL = 0.1
MAX_REROUTES = 3  # a request follows its shard this many times, then gives up (503)


class Unreachable(Exception):
    """No member that owns the shard answers right now (a rebalance, or its owner is down)."""

    def __init__(self, shard: int | None) -> None:
        super().__init__(f"no reachable owner for shard {shard}")
        self.shard = shard


class Router:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @property
    def peers(self) -> Any:
        return self.engine.peers

    # --- where ---------------------------------------------------------------------

    def is_local(self, shard: int) -> bool:
        owned = self.engine.owned
        return owned is None or shard in owned

    def owner_url(self, shard: int) -> str | None:
        """The reachable member owning ``shard``; None when it is this node or no one reachable."""
        return self.peers.owner_url(shard) if self.peers is not None else None

    def queue_shard(self, kind: str, namespace: str, queue: str) -> int:
        return self.engine.queue_home(kind, namespace, queue)

    def is_local_queue(self, kind: str, namespace: str, queue: str) -> bool:
        return self.is_local(self.queue_shard(kind, namespace, queue))

    def require_queue_here(self, kind: str, namespace: str, queue: str) -> None:
        """Polls park where the queue's tasks gather: ``ForwardTo`` its home unless that is here."""
        shard = self.queue_shard(kind, namespace, queue)
        if not self.is_local(shard):
            raise ForwardTo(shard)

    # --- reaching the owner --------------------------------------------------------

    async def _owner_within(self, shard: int, deadline: float) -> str | None:
        """Wait (up to ``deadline``) for a reachable owner; None when it is this node."""
        while True:
            if self.is_local(shard):
                return None
            url = self.owner_url(shard)
            if url is not None:
                return url
            if trio.current_time() >= deadline:
                raise Unreachable(shard)
            await trio.sleep(min(0.25, max(deadline - trio.current_time(), 0.01)))

    async def call(
        self, shard: int, op: str, *, timeout: float = PEER_TIMEOUT, budget: float = OWNER_BUDGET,
        retry: bool = True, **args: Any,
    ) -> Any:
        """Run node call ``op`` on the member owning ``shard`` (it must not be this node).

        ``retry=False`` for calls that must not run twice (a query submission): a member that
        does not answer in ``timeout`` then raises ``Unreachable`` at once."""
        if self.peers is None:
            raise Unreachable(shard)
        deadline = trio.current_time() + budget
        while True:
            url = await self._owner_within(shard, deadline)
            if url is None:
                raise Unreachable(shard)  # it became ours meanwhile: the caller handles it locally
            try:
                with trio.fail_after(timeout):
                    return await self.peers.call(url, op, **args)
            except (PeerError, trio.TooSlowError) as exc:
                if isinstance(exc, trio.TooSlowError):
                    self.peers.suspect(url)
                log.info("%s to %s for shard %s failed (%s)", op, url, shard, exc)
                if not retry or trio.current_time() >= deadline:
                    raise Unreachable(shard) from None
                await trio.sleep(0.1)

    async def call_run(self, run_id: str, op: str, **kw: Any) -> Any:
        shard = shard_of_run(run_id)
        if shard is None:
            raise Unreachable(None)
        return await self.call(shard, op, run_id=run_id, **kw)

    async def forward(
        self, shard: int, send: Callable[[str, bool], Awaitable[httpx.Response]], *, budget: float = OWNER_BUDGET,
    ) -> httpx.Response | None:
        """Send a client's request to the member owning ``shard`` with ``send(url, rerouted)``.

        While it is open, the owner is watched: if the directory moves the shard or the owner
        stops answering probes, the attempt is abandoned and the request goes to the new owner,
        marked ``rerouted``: the lost owner may have acted on it before its answer was lost.
        None when the shard became this node's (handle it here); ``Unreachable`` when no
        reachable owner appears within ``budget``."""
        deadline = trio.current_time() + budget
        for tries in range(MAX_REROUTES + 1):
            url = await self._owner_within(shard, deadline)
            if url is None:
                return None
            answer: httpx.Response | None = None
            failed: str | None = None
            async with trio.open_nursery() as nursery:

                async def watch(url: str = url) -> None:
                    # A frozen or partitioned owner never answers: give up on it as soon as the
                    # probes say so or the directory names another owner.
                    while self.owner_url(shard) == url and not self.is_local(shard):
                        await trio.sleep(WATCH_INTERVAL)
                    nursery.cancel_scope.cancel()

                async def attempt(url: str = url, rerouted: bool = tries > 0) -> None:
                    nonlocal answer, failed
                    try:
                        answer = await send(url, rerouted)
                    except httpx.HTTPError as exc:
                        failed = str(exc) or type(exc).__name__
                        self.peers.suspect(url)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(attempt)
            if answer is not None:
                return answer
            log.info("request for shard %s to %s abandoned (%s); re-routing", shard, url, failed or "the owner moved or stopped answering")
            deadline = trio.current_time() + budget  # counted from the loss: a poll may have been held a while
        raise Unreachable(shard)
