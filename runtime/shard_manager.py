"""Shard ownership for a node on the PostgreSQL journal.

Every second the manager keeps its lease session alive, heartbeats its ``nodes`` row, reads
who owns what, and converges to its fair share: it claims free shards (advisory lock plus an
epoch bump) and hands surplus ones over (drain the shard's actors, then unlock). The engine
fences every commit with the epochs held here, so a node that lost a shard — dead session,
long pause, partition — cannot write to it, and drops the shard's actors as soon as it notices.

The database going away never ends the node (ARCHITECTURE.md, invariant 10): a lost session
drops every shard and the manager opens a new one with backoff, then claims its share again;
a failed round (the pool cannot reach the server, a statement times out under load) is logged
and tried again next second without giving anything up, because the lease session, not the
round, is what ownership rests on. Only a configuration error (a shard count that disagrees
with the cluster's) ends the process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio

from .engine import Engine
from .errors import ConfigurationError
from .shards import fair_share, plan

log = logging.getLogger("dw.shards")

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0
STATS_EVERY_SECONDS = 60.0


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


@dataclass(frozen=True)
class RoundDecision:
    """What one convergence round decides, before any of it is done."""

    live: list[str]  # members counted alive: heartbeating, active, lease session connected
    stale: list[int]  # shards marked ours that this session does not hold (an earlier session's)
    owners: dict[int, str | None]  # shard -> owner as this round reads it (stale marks cleared, held ones ours)
    directory: dict[int, str]  # shard -> live owner, for routing requests
    claims: list[int]  # free shards to claim
    releases: list[int]  # surplus shards to hand over
    target: int  # this node's fair share


def decide_round(
    *,
    node_id: str,
    shard_count: int,
    now: float,
    node_ttl: float,
    nodes: Iterable[Any],
    sessions: set[str],
    epochs: dict[int, tuple[str | None, int]],
    held: dict[int, int],
) -> RoundDecision:
    """The decisions of one round from what it read (pure: no I/O, so it can be tested alone).

    ``nodes`` are NodeRow-likes, ``sessions`` the node ids with a connected lease session (as
    ``lease_sessions`` reports them; ids are at most 47 printable ASCII characters, so the
    session names hold them whole and they are compared exactly),
    ``epochs`` the ``shards`` table, ``held`` the shards this node's lease session holds.
    """
    # A member is live while it heartbeats *and* its lease session is connected: a killed
    # node's session ends at once, so its shards are free without waiting for its row to age.
    live = [
        n.node_id
        for n in nodes
        if n.status == "active"
        and n.heartbeat_at is not None
        and now - n.heartbeat_at < node_ttl
        and (n.node_id in sessions or n.node_id == node_id)
    ]
    owners: dict[int, str | None] = {s: owner for s, (owner, _epoch) in epochs.items()}
    stale = [shard for shard, owner in owners.items() if owner == node_id and shard not in held]
    for shard in stale:
        owners[shard] = None  # ours before a restart: the lock died with the old session
    for shard in held:
        owners[shard] = node_id
    directory = {s: o for s, o in owners.items() if o is not None and o in live}
    claims, releases = plan(shard_count, live, node_id, owners)
    return RoundDecision(live, stale, owners, directory, claims, releases, fair_share(shard_count, live, node_id))


class ShardManager:
    def __init__(
        self,
        engine: Engine,
        journal: Any,
        dsn: str,
        node_id: str,
        advertise_url: str | None,
        shard_count: int,
        *,
        interval: float = 1.0,
        node_ttl: float = 10.0,
        started_at: float | None = None,
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.dsn = dsn
        self.node_id = node_id
        self.advertise_url = advertise_url
        self.shard_count = shard_count
        self.interval = interval
        self.node_ttl = node_ttl
        self.started_at = engine.clock.now() if started_at is None else started_at
        # what an operator reads in the log: lease sessions opened and lost, rounds that failed
        self.counters = {"sessions_opened": 0, "sessions_lost": 0, "rounds_failed": 0, "adoptions_retried": 0, "claims": 0,
                         "handovers": 0}
        self._unadopted: set[int] = set()
        self._next_stats = 0.0

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from persistence.pg_shard_leases import ShardLeases, node_id_problem

        problem = node_id_problem(self.node_id)
        if problem is not None:  # not retried: no session could ever name this node exactly
            raise ConfigurationError(f"refusing to join the cluster: {problem}")
        namespace = await self._prepare()
        self.engine.owned = {}
        started = False
        backoff = BACKOFF_FIRST
        try:
            while True:
                try:
                    async with trio.open_nursery() as nursery:
                        leases = ShardLeases(
                            self.dsn, self.node_id, lock_namespace=namespace, idle_session_timeout=self.node_ttl,
                            heartbeat_interval=self.interval, parent_timeout=self.node_ttl * 0.8,
                        )
                        try:
                            await leases.open(nursery)
                            self.counters["sessions_opened"] += 1
                            if self.counters["sessions_opened"] > 1:
                                log.info("node %s: lease session open again; rejoining the cluster", self.node_id)
                            backoff = BACKOFF_FIRST
                            started = await self._hold(leases, task_status, started)
                        finally:
                            self._drop_everything()
                            with trio.CancelScope(shield=True):
                                await leases.aclose()
                            nursery.cancel_scope.cancel()
                except ConfigurationError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the database is away: serve 503s, retry
                    log.warning(
                        "node %s: cannot hold a lease session (%s); serving no shard, retrying in %.1fs",
                        self.node_id, _brief(exc), backoff,
                    )
                if not started:
                    task_status.started()  # answer requests (503 with Retry-After) while the database is away
                    started = True
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await self.journal.upsert_node(self.node_id, self.advertise_url, self.started_at, self.engine.clock.now(), "left")
                except Exception as exc:  # noqa: BLE001 - leaving: the row ages out anyway
                    log.info("node %s: could not mark itself as left (%s)", self.node_id, _brief(exc))

    async def _prepare(self) -> int:
        """Agree on the shard count and learn the lock namespace, waiting out an unreachable database."""
        backoff = BACKOFF_FIRST
        while True:
            try:
                try:
                    await self.journal.ensure_cluster(self.shard_count)
                except ValueError as exc:
                    raise ConfigurationError(f"refusing to join the cluster: {exc}") from None
                return await self.journal.lease_namespace()
            except ConfigurationError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried: the database may be restarting
                log.warning("node %s: cannot reach the cluster's database (%s); retrying in %.1fs", self.node_id, _brief(exc), backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _hold(self, leases: Any, task_status: Any, started: bool) -> bool:
        """Converge every ``interval`` while the session lives; returns once it is lost."""
        while not leases.lost.is_set():
            try:
                target = await self._step(leases)
            except Exception as exc:  # noqa: BLE001 - one failed round gives nothing up
                if leases.lost.is_set():
                    break
                self.counters["rounds_failed"] += 1
                log.warning("node %s: shard round failed (%s); trying again", self.node_id, _brief(exc))
                target = None
            if not started:
                # Serve only once this node holds its share (a restarted node's old session may
                # linger for a moment), but never wait more than the grace.
                if target is not None and len(self.engine.owned or {}) < target and self.engine.clock.now() < self.started_at + 10:
                    await trio.sleep(0.1)
                    continue
                task_status.started()
                started = True
            with trio.move_on_after(self.interval):
                await leases.lost.wait()
            if not leases.lost.is_set():
                try:
                    await leases.keepalive()
                except Exception:  # noqa: BLE001 - a failed keep-alive marks the leases lost itself
                    pass
                self._log_stats(leases)
        self.counters["sessions_lost"] += 1
        log.warning(
            "node %s: lost its shard lease session (%s); dropping every shard and rejoining (%s)",
            self.node_id, leases.lost_reason, self._counters_text(leases),
        )
        return started

    def _counters_text(self, leases: Any) -> str:
        stats = leases.stats or {}
        return (
            f"lease sessions opened {self.counters['sessions_opened']}, lost {self.counters['sessions_lost']}; "
            f"heartbeats {stats.get('heartbeats', 0)}, slowest {stats.get('max_ms', 0)} ms, over 1 s {stats.get('slow', 0)}; "
            f"failed rounds {self.counters['rounds_failed']}"
        )

    def _log_stats(self, leases: Any) -> None:
        now = self.engine.clock.now()
        if now >= self._next_stats:
            if self._next_stats:
                log.info("node %s: %s", self.node_id, self._counters_text(leases))
            self._next_stats = now + STATS_EVERY_SECONDS

    def _drop_everything(self) -> None:
        self.engine.drop_shards(set(self.engine.owned or {}))
        self.engine.owned = {}
        self._unadopted.clear()

    async def _step(self, leases: Any) -> int:
        """One convergence round; returns this node's fair share."""
        now = self.engine.clock.now()
        await self.journal.upsert_node(self.node_id, self.advertise_url, self.started_at, now, "active")
        sessions = await self.journal.lease_sessions()
        nodes = await self.journal.list_nodes()
        epochs = await self.journal.shard_epochs()
        held = leases.owned()
        decision = decide_round(
            node_id=self.node_id, shard_count=self.shard_count, now=now, node_ttl=self.node_ttl,
            nodes=nodes, sessions=sessions, epochs=epochs, held=held,
        )
        stale = decision.stale
        if self.engine.peers is not None:
            self.engine.peers.set_directory(nodes)
            self.engine.peers.owners = dict(decision.directory)
        claims, releases = decision.claims, decision.releases
        for shard in releases:
            self.engine.drop_shards({shard})
            self._unadopted.discard(shard)
            self.engine.owned = {s: e for s, e in (self.engine.owned or {}).items() if s != shard}
            await leases.release(shard)
        claimed = []
        for shard in claims:
            epoch = await leases.claim(shard)
            if epoch is not None:
                claimed.append(shard)
        self.engine.owned = leases.owned()
        self.counters["claims"] += len(claimed)
        self.counters["handovers"] += len(releases)
        if stale:
            # Marks of an earlier session that this one did not take back: the other members read
            # them as owned by a live node and would never claim them, so they are cleared.
            cleared = await self.journal.clear_owner_marks(self.node_id, sorted(self.engine.owned))
            if cleared:
                log.info("node %s cleared %d owner mark(s) its earlier session left", self.node_id, cleared)
        if self.engine.peers is not None:
            for shard in self.engine.owned:
                self.engine.peers.owners[shard] = self.node_id
        if claimed or releases:
            log.info(
                "node %s owns %d shards (claimed %s, handed over %s)",
                self.node_id, len(self.engine.owned), claimed or "none", releases or "none",
            )
        self._unadopted |= set(claimed)
        if self._unadopted:
            # Adoption reads the journal; if it fails the shards stay owned and it is retried
            # next round, so no adopted run is left without its tasks and timers.
            pending = set(self._unadopted) & set(self.engine.owned)
            try:
                await self.engine.adopt_shards(pending)
            except Exception:
                self.counters["adoptions_retried"] += 1
                raise
            self._unadopted -= pending
        return decision.target
