"""Shard ownership on PostgreSQL: session advisory locks plus a fencing epoch per shard.

A node owns a shard while its lease session holds ``pg_try_advisory_lock(namespace, shard)``
*and* it knows the epoch it bumped when it took the lock. The lock says "nobody else may
claim now"; the epoch is what makes the ownership enforceable at the journal: every batch the
owner writes carries ``Batch.fence = {shard: epoch}``, and the journal commits it only while
``shards.epoch`` still equals it (``persistence.journal``, invariant 4). A claim bumps the
epoch, so once another node has claimed a shard, every write fenced with an older epoch is
refused with ``FencedError``, however late it arrives.

``ShardLeases`` uses ONE dedicated ``asyncpg.connect`` connection, never a pool connection
(a pool's release runs ``pg_advisory_unlock_all()``; STACK.md section 3). Each operation is
one asyncio coroutine called through one ``aio_as_trio``; timeouts are on the trio side only.
It must be used inside ``trio_asyncio.open_loop()``.

Loss. When the session ends (the server terminated it, the node lost the network, the
server restarted), its advisory locks are freed and other nodes may claim the shards. The
node learns it in two ways: asyncpg's termination listener (fires within milliseconds when the
socket closes) and ``heartbeat`` (a ``SELECT 1`` under ``trio.fail_after``). Either marks every
lease lost: ``owned()`` becomes empty and ``lost`` is set, and the runtime must stop the
shards' actors. Writes already in flight, fenced with the old epochs, are rejected by the
journal as soon as another node has claimed the shard (the claim bumps the epoch). A lost
``ShardLeases`` is finished: ``aclose()`` it and open a new one to claim again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio
import trio_asyncio  # noqa: F401 - must be imported before asyncpg (STACK.md section 3)
from trio_asyncio import aio_as_trio

# isort: split
import asyncpg

log = logging.getLogger("dw.shards")

# First key of the two-int advisory lock form: pg_try_advisory_lock(LEASE_LOCK_NAMESPACE, shard).
# int4 spelling of b"dwsh". The two-int form is a lock space of its own, apart from the bigint
# keys (postgres_journal.MIGRATION_LOCK_KEY, CLUSTER_LOCK_KEY); the value differs anyway. Two
# clusters sharing one database (different schemas) must use different namespaces: advisory
# locks are per database, not per schema.
LEASE_LOCK_NAMESPACE = int.from_bytes(b"dwsh", "big")

OP_TIMEOUT = 10.0  # seconds for claim/release round trips before the session is declared lost
CLOSE_TIMEOUT = 5.0  # seconds for a graceful close before the connection is terminated


# Errors that mean the session itself is unusable (as opposed to a statement failing).
_SESSION_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown (pg_terminate_backend), ...
    OSError,
)


class LeasesLostError(RuntimeError):
    """The lease session is gone (or was closed); open a new ShardLeases."""


class ShardLeases:
    """Shard leases held on one dedicated PostgreSQL session.

    ``dsn`` is an asyncpg DSN (``?search_path=...`` selects the schema holding ``shards``).
    ``idle_session_timeout`` (seconds), when given, is set on the session so that the *server*
    ends it if the node goes silent (hung process, partition) for that long: its locks then
    free without waiting for TCP timeouts. Heartbeat more often than that.
    """

    def __init__(
        self,
        dsn: str,
        node_id: str,
        *,
        lock_namespace: int = LEASE_LOCK_NAMESPACE,
        idle_session_timeout: float | None = None,
        op_timeout: float = OP_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not -(2**31) <= lock_namespace < 2**31:
            raise ValueError("lock_namespace must fit in a 32-bit signed integer")
        self.dsn = dsn
        self.node_id = node_id
        self.lock_namespace = lock_namespace
        self.idle_session_timeout = idle_session_timeout
        self.op_timeout = op_timeout
        self.clock = clock
        self.lost = trio.Event()
        self.lost_reason: str | None = None
        self._conn: asyncpg.Connection | None = None
        self._owned: dict[int, int] = {}
        self._lock = trio.Lock()  # one connection: one operation at a time
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None or self._closing:
            raise RuntimeError("ShardLeases.open() may be called once")
        settings: dict[str, str] = {"application_name": f"dw-shard-leases:{self.node_id}"[:63]}
        if self.idle_session_timeout is not None:
            settings["idle_session_timeout"] = str(max(1, int(self.idle_session_timeout * 1000)))
        self._conn = await aio_as_trio(asyncpg.connect)(self.dsn, server_settings=settings)
        self._conn.add_termination_listener(self._on_terminated)

    @property
    def backend_pid(self) -> int | None:
        """The lease session's server process id (``pg_stat_activity.pid``)."""
        return self._conn.get_server_pid() if self._conn is not None else None

    def owned(self) -> dict[int, int]:
        """shard -> the epoch held (a copy). Fence writes to a shard with this epoch."""
        return dict(self._owned)

    async def aclose(self) -> None:
        """Clear our owner marks and end the session (freeing every lock). Shielded."""
        self._closing = True
        conn, self._conn = self._conn, None
        owned, self._owned = self._owned, {}
        if conn is None:
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_TIMEOUT):
                try:
                    await aio_as_trio(self._aio_close)(conn, sorted(owned))
                    return
                except Exception as exc:  # noqa: BLE001 - the session is ending anyway
                    log.info("shard leases: graceful close failed (%s); terminating the session", exc)
            await aio_as_trio(self._aio_terminate)(conn)

    async def _aio_close(self, conn: asyncpg.Connection, shards: list[int]) -> None:
        if not conn.is_closed():
            if shards:
                await conn.execute(
                    "UPDATE shards SET owner_node = NULL, updated_at = $3"
                    " WHERE shard_id = ANY($1::int4[]) AND owner_node = $2",
                    shards, self.node_id, self.clock(),
                )
            await conn.close()

    @staticmethod
    async def _aio_terminate(conn: asyncpg.Connection) -> None:
        conn.terminate()

    # --- loss ----------------------------------------------------------------------

    def _on_terminated(self, conn: asyncpg.Connection) -> None:
        """asyncpg termination listener (runs on the asyncio loop, i.e. in our trio thread)."""
        if not self._closing:
            self._mark_lost("the lease session was terminated")

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        shards = sorted(self._owned)
        self._owned.clear()
        self.lost_reason = reason
        self.lost.set()
        log.warning("shard leases of node %s lost (%s): shards %s", self.node_id, reason, shards)
        # End the session so the server frees our locks now rather than when it notices.
        conn = self._conn
        if conn is not None and not conn.is_closed():
            conn.terminate()

    def _require_live(self) -> asyncpg.Connection:
        if self.lost.is_set():
            raise LeasesLostError(f"shard leases lost: {self.lost_reason}")
        if self._conn is None:
            raise LeasesLostError("shard leases are not open")
        return self._conn

    async def _run(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one asyncio unit of work on the session: serialized, shielded (so a lock
        taken is always recorded or released), bounded by ``op_timeout``; a failure of the
        session itself marks every lease lost."""
        with trio.CancelScope(shield=True):
            try:
                with trio.fail_after(self.op_timeout):
                    async with self._lock:
                        conn = self._require_live()
                        return await aio_as_trio(fn)(conn, *args)
            except trio.TooSlowError:
                self._mark_lost(f"{what} took longer than {self.op_timeout}s")
                raise LeasesLostError(f"shard leases lost: {what} timed out") from None
            except LeasesLostError:
                raise
            except Exception as exc:
                conn = self._conn
                if isinstance(exc, _SESSION_ERRORS) or conn is None or conn.is_closed():
                    self._mark_lost(f"{what} failed: {exc!r}")
                    raise LeasesLostError(f"shard leases lost: {exc}") from exc
                raise

    # --- leases --------------------------------------------------------------------

    async def claim(self, shard: int) -> int | None:
        """Take the shard if no other session holds it: the new epoch, or None.

        Claiming bumps the shard's epoch (fencing out every earlier holder's writes) and
        records us as its owner. A shard we already hold answers its current epoch.
        """
        if shard in self._owned and not self.lost.is_set():
            return self._owned[shard]
        epoch = await self._run("claim", self._aio_claim, shard, self.clock())
        if self.lost.is_set():  # the session ended while the claim was answered
            raise LeasesLostError(f"shard leases lost: {self.lost_reason}")
        if epoch is not None:
            self._owned[shard] = epoch
        return epoch

    async def _aio_claim(self, conn: asyncpg.Connection, shard: int, now: float) -> int | None:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1::int4, $2::int4)", self.lock_namespace, shard):
            return None
        try:
            epoch = await conn.fetchval(
                "UPDATE shards SET epoch = epoch + 1, owner_node = $1, updated_at = $2 WHERE shard_id = $3"
                " RETURNING epoch",
                self.node_id, now, shard,
            )
        except Exception:  # not on cancellation: then the session is declared lost and terminated
            if not conn.is_closed():
                await conn.fetchval("SELECT pg_advisory_unlock($1::int4, $2::int4)", self.lock_namespace, shard)
            raise
        if epoch is None:
            await conn.fetchval("SELECT pg_advisory_unlock($1::int4, $2::int4)", self.lock_namespace, shard)
            raise ValueError(f"shard {shard} does not exist (ensure_cluster creates shards 0..shard_count-1)")
        return int(epoch)

    async def release(self, shard: int) -> None:
        """Give the shard up: clear our owner mark (if still ours) and unlock it.

        It leaves ``owned()`` first, so stop writing to the shard (drain its actors) before
        releasing. The epoch is not changed; the next claimer bumps it.
        """
        epoch = self._owned.pop(shard, None)
        if epoch is None:
            return
        await self._run("release", self._aio_release, shard, epoch, self.clock())

    async def _aio_release(self, conn: asyncpg.Connection, shard: int, epoch: int, now: float) -> None:
        await conn.execute(
            "UPDATE shards SET owner_node = NULL, updated_at = $4 WHERE shard_id = $1 AND owner_node = $2 AND epoch = $3",
            shard, self.node_id, epoch, now,
        )
        await conn.fetchval("SELECT pg_advisory_unlock($1::int4, $2::int4)", self.lock_namespace, shard)

    async def heartbeat(self, timeout: float) -> bool:
        """Check the session with ``SELECT 1`` within ``timeout`` seconds.

        True while healthy. On failure or timeout every lease is marked lost (``owned()``
        becomes empty, ``lost`` is set, the session is terminated) and the answer is False.
        Writes fenced with the lost epochs will be refused by the journal once another node
        claims the shards.
        """
        if self.lost.is_set():
            return False
        try:
            with trio.fail_after(timeout):
                async with self._lock:
                    conn = self._require_live()
                    ok = await aio_as_trio(conn.fetchval)("SELECT 1") == 1
        except trio.TooSlowError:
            self._mark_lost(f"heartbeat took longer than {timeout}s")
            return False
        except LeasesLostError:
            return False
        except Exception as exc:  # noqa: BLE001 - any failure of the session is a loss
            self._mark_lost(f"heartbeat failed: {exc!r}")
            return False
        if not ok:
            self._mark_lost("heartbeat answered wrongly")
        return ok and not self.lost.is_set()
