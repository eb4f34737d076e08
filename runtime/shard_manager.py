"""Shard ownership for a node on the PostgreSQL journal.

Every second the manager heartbeats its lease session and its ``nodes`` row, reads who
owns what, and converges to its fair share: it claims free shards (advisory lock plus
an epoch bump) and hands surplus ones over (drain the shard's actors, then unlock). The
engine fences every commit with the epochs held here, so a node that lost a shard —
dead session, long pause, partition — cannot write to it, and drops the shard's actors
as soon as it notices.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .engine import Engine
from .errors import ConfigurationError
from .shards import fair_share, plan

log = logging.getLogger("dw.shards")


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

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from persistence.pg_shard_leases import ShardLeases

        try:
            await self.journal.ensure_cluster(self.shard_count)
        except ValueError as exc:
            raise ConfigurationError(f"refusing to join the cluster: {exc}") from None
        self.engine.owned = {}
        namespace = await self.journal.lease_namespace()
        first = True
        try:
            while True:
                leases = ShardLeases(self.dsn, self.node_id, lock_namespace=namespace, idle_session_timeout=self.node_ttl)
                await leases.open()
                try:
                    while not leases.lost.is_set():
                        target = await self._step(leases)
                        if first:
                            # Serve only once this node holds its share (a restarted node's old
                            # session may linger for a moment), but never wait more than the grace.
                            if len(self.engine.owned or {}) < target and self.engine.clock.now() < self.started_at + 10:
                                await trio.sleep(0.1)
                                continue
                            task_status.started()
                            first = False
                        with trio.move_on_after(self.interval):
                            await leases.lost.wait()
                        if not leases.lost.is_set() and not await leases.heartbeat(self.interval * 2):
                            break
                    log.warning("lost the shard lease session (%s); dropping every shard", leases.lost_reason)
                finally:
                    self.engine.drop_shards(set(self.engine.owned or {}))
                    self.engine.owned = {}
                    with trio.CancelScope(shield=True):
                        await leases.aclose()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                now = self.engine.clock.now()
                await self.journal.upsert_node(self.node_id, self.advertise_url, self.started_at, now, "left")

    async def _step(self, leases: Any) -> int:
        """One convergence round; returns this node's fair share."""
        now = self.engine.clock.now()
        await self.journal.upsert_node(self.node_id, self.advertise_url, self.started_at, now, "active")
        # A member is live while it heartbeats *and* its lease session is connected: a killed
        # node's session ends at once, so its shards are free without waiting for its row to age.
        sessions = await self.journal.lease_sessions()
        live = [
            n.node_id
            for n in await self.journal.list_nodes()
            if n.status == "active"
            and n.heartbeat_at is not None
            and now - n.heartbeat_at < self.node_ttl
            and (n.node_id[:47] in sessions or n.node_id == self.node_id)
        ]
        owners: dict[int, str | None] = {s: owner for s, (owner, _epoch) in (await self.journal.shard_epochs()).items()}
        held = leases.owned()
        for shard, owner in owners.items():
            if owner == self.node_id and shard not in held:
                owners[shard] = None  # ours before a restart: the lock died with the old session
        for shard in held:
            owners[shard] = self.node_id
        if self.engine.peers is not None:
            self.engine.peers.set_directory(await self.journal.list_nodes())
            self.engine.peers.owners = {s: o for s, o in owners.items() if o is not None and o in live}
        claims, releases = plan(self.shard_count, live, self.node_id, owners)
        for shard in releases:
            self.engine.drop_shards({shard})
            self.engine.owned = {s: e for s, e in (self.engine.owned or {}).items() if s != shard}
            await leases.release(shard)
        claimed = []
        for shard in claims:
            epoch = await leases.claim(shard)
            if epoch is not None:
                claimed.append(shard)
        self.engine.owned = leases.owned()
        if self.engine.peers is not None:
            for shard in self.engine.owned:
                self.engine.peers.owners[shard] = self.node_id
        if claimed or releases:
            log.info(
                "node %s owns %d shards (claimed %s, handed over %s)",
                self.node_id, len(self.engine.owned), claimed or "none", releases or "none",
            )
        if claimed:
            await self.engine.adopt_shards(set(claimed))
        return fair_share(self.shard_count, live, self.node_id)
