"""Shard ownership on PostgreSQL: session advisory locks plus a fencing epoch per shard.

A node owns a shard while its lease session holds ``pg_try_advisory_lock(namespace, shard)``
*and* it knows the epoch it bumped when it took the lock. The lock says "nobody else may
claim now"; the epoch is what makes the ownership enforceable at the journal: every batch the
owner writes carries ``Batch.fence = {shard: epoch}``, and the journal commits it only while
``shards.epoch`` still equals it (``persistence.journal``, invariant 4). A claim bumps the
epoch, so once another node has claimed a shard, every write fenced with an older epoch is
refused with ``FencedError``, however late it arrives.

The session lives in a child process (``persistence.lease_process``: why there, and how it
dies with the node), which this class drives over a pipe. A dedicated connection either way:
never a pool connection, whose release runs ``pg_advisory_unlock_all()`` (STACK.md section 3).

Loss. When the session ends (the server terminated it, the node lost the network, the
server restarted, the node froze past ``parent_timeout``), its advisory locks are freed and
other nodes may claim the shards. The child reports it at once (asyncpg's termination
listener fires within milliseconds when the socket closes; a failed heartbeat, a failed
statement) and exits. Either marks every lease lost: ``owned()`` becomes empty and ``lost``
is set, and the runtime must stop the shards' actors. Writes already in flight, fenced with
the old epochs, are rejected by the journal as soon as another node has claimed the shard. A
lost ``ShardLeases`` is finished: ``aclose()`` it and open a new one to claim again.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import trio

from .clock import Clock, SystemClock

if TYPE_CHECKING:  # only the type: importing the module would import asyncpg ahead of trio_asyncio
    from .lease_process import LeaseConfig

log = logging.getLogger("dw.shards")

# First key of the two-int advisory lock form: pg_try_advisory_lock(LEASE_LOCK_NAMESPACE, shard).
# int4 spelling of b"dwsh". The two-int form is a lock space of its own, apart from the bigint
# keys (postgres_journal.MIGRATION_LOCK_KEY, CLUSTER_LOCK_KEY); the value differs anyway. Two
# clusters sharing one database (different schemas) must use different namespaces: advisory
# locks are per database, not per schema.
LEASE_LOCK_NAMESPACE = int.from_bytes(b"dwsh", "big")

# A lease session is named ``dw-shard-leases:<node id>`` (``application_name``), and that name is
# how every member learns which others are connected (``PostgresJournal.lease_sessions``).
# PostgreSQL keeps 63 bytes of it and replaces every byte that is not printable ASCII, so only an
# id of at most 47 printable ASCII characters comes back exactly as it was sent; two longer ids
# with one prefix would be one member to the cluster.
LEASE_SESSION_PREFIX = "dw-shard-leases:"
APPLICATION_NAME_BYTES = 63
MAX_NODE_ID_LENGTH = APPLICATION_NAME_BYTES - len(LEASE_SESSION_PREFIX)


def node_id_problem(node_id: str) -> str | None:
    """Why ``node_id`` cannot name a cluster member (None when it can)."""
    if not node_id:
        return "a node id must not be empty"
    if len(node_id) > MAX_NODE_ID_LENGTH:
        return (f"a node id is at most {MAX_NODE_ID_LENGTH} characters, {node_id!r} has {len(node_id)}"
                f" (PostgreSQL keeps {APPLICATION_NAME_BYTES} bytes of its lease session name,"
                f" {LEASE_SESSION_PREFIX}<node id>)")
    odd = [c for c in node_id if not " " <= c <= "~"]
    if odd:
        return (f"a node id may hold only printable ASCII characters, {node_id!r} has {''.join(odd)!r}"
                " (PostgreSQL rewrites any other in its lease session name)")
    return None


def lease_session_name(node_id: str) -> str:
    """The ``application_name`` of ``node_id``'s lease session; refuses an id it cannot hold exactly."""
    problem = node_id_problem(node_id)
    if problem is not None:
        raise ValueError(problem)
    return LEASE_SESSION_PREFIX + node_id


# Second key of the lock every lease session holds, shared, for its whole life:
# pg_advisory_lock_shared(namespace, MEMBER_LOCK_KEY). It says which cluster the session belongs
# to: advisory locks are per database and the namespace is per schema, whereas the session list
# (pg_stat_activity) covers the whole server. A shard is never negative, so this is no shard's key.
MEMBER_LOCK_KEY = -1


OP_TIMEOUT = 10.0  # seconds for claim/release round trips before the session is declared lost
# A graceful close clears the owner marks; killing the child frees the locks just as fast (its
# socket closes). Kept short: a stopping node's whole shutdown (HTTP grace 2 s, this, the journal's
# pool close) stays within ~10 s, well inside an orchestrator's usual SIGTERM grace.
CLOSE_TIMEOUT = 3.0


class LeasesLostError(RuntimeError):
    """The lease session is gone (or was closed); open a new ShardLeases."""


class ShardLeases:
    """Shard leases held on one dedicated PostgreSQL session, in a child process.

    ``dsn`` is an asyncpg DSN (``?search_path=...`` selects the schema holding ``shards``).
    ``idle_session_timeout`` (seconds), when given, is set on the session so that the *server*
    ends it if nothing arrives for that long (the child frozen with the node, a partition):
    its locks then free without waiting for TCP timeouts. ``heartbeat_interval`` makes the
    child heartbeat on its own, and ``parent_timeout`` makes it end the session when this side
    has sent nothing (``heartbeat``/``ping``, claims) for that long. ``clock`` stamps the
    ``updated_at`` of the shard rows a claim, release or close writes (wall time by default).
    """

    def __init__(
        self,
        dsn: str,
        node_id: str,
        *,
        lock_namespace: int = LEASE_LOCK_NAMESPACE,
        idle_session_timeout: float | None = None,
        op_timeout: float = OP_TIMEOUT,
        clock: Clock | None = None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float = 5.0,
        parent_timeout: float | None = None,
    ) -> None:
        if not -(2**31) <= lock_namespace < 2**31:
            raise ValueError("lock_namespace must fit in a 32-bit signed integer")
        self.application_name = lease_session_name(node_id)
        self.dsn = dsn
        self.node_id = node_id
        self.lock_namespace = lock_namespace
        self.idle_session_timeout = idle_session_timeout
        self.op_timeout = op_timeout
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.parent_timeout = parent_timeout
        self.lost = trio.Event()
        self.lost_reason: str | None = None
        self.backend_pid: int | None = None  # the session's server process (pg_stat_activity.pid)
        self.stats: dict[str, float] = {}  # the child's heartbeat counters, as of the last ping
        self._proc: trio.Process | None = None
        self._owned: dict[int, int] = {}
        self._pending: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self._next_id = 0
        self._buffer = b""
        self._send_lock = trio.Lock()
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------

    async def open(self, nursery: trio.Nursery) -> None:
        """Start the session's process and wait until it is connected; its reader runs in ``nursery``."""
        if self._proc is not None or self._closing:
            raise RuntimeError("ShardLeases.open() may be called once")
        cfg: LeaseConfig = {
            "dsn": self.dsn, "node_id": self.node_id, "application_name": self.application_name,
            "lock_namespace": self.lock_namespace, "member_key": MEMBER_LOCK_KEY,
            "idle_session_timeout": self.idle_session_timeout, "op_timeout": self.op_timeout,
            "heartbeat_interval": self.heartbeat_interval, "heartbeat_timeout": self.heartbeat_timeout,
            "parent_timeout": self.parent_timeout,
        }
        self._proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "persistence.lease_process", json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        try:
            with trio.fail_after(self.op_timeout + 5):
                first = await self._read_message()
        except BaseException:
            self._kill()
            raise
        if first is None or "ready" not in first:
            self._kill()
            reason = (first or {}).get("lost", "the lease process exited before connecting")
            raise LeasesLostError(f"shard leases not opened: {reason}")
        self.backend_pid = int(first["ready"])
        nursery.start_soon(self._reader, name=f"shard-leases:{self.node_id}")

    def owned(self) -> dict[int, int]:
        """shard -> the epoch held (a copy). Fence writes to a shard with this epoch."""
        return dict(self._owned)

    async def aclose(self) -> None:
        """Clear our owner marks and end the session (freeing every lock). Shielded."""
        if self._closing:
            return
        self._closing = True
        owned, self._owned = self._owned, {}
        proc = self._proc
        if proc is None:
            return
        with trio.CancelScope(shield=True):
            if not self.lost.is_set() and proc.returncode is None:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    try:
                        await self._call("close", _timeout=CLOSE_TIMEOUT, shards=sorted(owned), now=self.clock.now())
                    except (LeasesLostError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        log.info("shard leases: graceful close failed (%s); ending the session", exc)
            with trio.move_on_after(1):
                await proc.wait()
            self._kill()
            with trio.move_on_after(2):
                await proc.wait()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()  # the socket closes with it: the server frees the locks at once

    # --- the pipe ------------------------------------------------------------------

    async def _read_message(self) -> dict[str, Any] | None:
        assert self._proc is not None and self._proc.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self._proc.stdout.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"the lease process sent {type(message).__name__}, not a JSON object")
        return message

    async def _reader(self) -> None:
        try:
            while True:
                message = await self._read_message()
                if message is None:
                    if not self._closing:
                        self._mark_lost("the lease process exited")
                    break
                if "lost" in message:
                    self._mark_lost(str(message["lost"]))
                elif "id" in message:
                    waiter = self._pending.pop(message["id"], None)
                    if waiter is not None:
                        waiter[1].append(message)
                        waiter[0].set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError) as exc:
            if not self._closing:
                self._mark_lost(f"the lease process pipe failed: {exc!r}")
        finally:
            for event, _slot in self._pending.values():
                event.set()  # callers see no answer: the session is gone
            self._pending.clear()

    async def _call(self, op: str, *, _timeout: float | None = None, **args: object) -> object:
        """Send ``op`` to the session and wait for its answer: the reply's ``ok`` value (JSON)."""
        if self.lost.is_set():
            raise LeasesLostError(f"shard leases lost: {self.lost_reason}")
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise LeasesLostError("shard leases are not open")
        self._next_id += 1
        rid = self._next_id
        done = trio.Event()
        slot: list[dict[str, Any]] = []  # the reply, once it arrives
        self._pending[rid] = (done, slot)
        try:
            with trio.fail_after(self.op_timeout if _timeout is None else _timeout):
                async with self._send_lock:
                    await proc.stdin.send_all(json.dumps({"id": rid, "op": op, **args}).encode() + b"\n")
                await done.wait()
        except trio.TooSlowError:
            self._mark_lost(f"{op} took longer than {self.op_timeout if _timeout is None else _timeout}s")
            raise LeasesLostError(f"shard leases lost: {op} timed out") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._mark_lost(f"{op}: the lease process is gone ({exc!r})")
            raise LeasesLostError(f"shard leases lost: {exc}") from None
        finally:
            self._pending.pop(rid, None)
        if not slot:
            raise LeasesLostError(f"shard leases lost: {self.lost_reason}")
        answer = slot[0]
        if "error" in answer:
            if answer.get("session"):
                self._mark_lost(f"{op} failed: {answer['error']}")
                raise LeasesLostError(f"shard leases lost: {answer['error']}")
            if answer.get("type") == "ValueError":  # a request the session refused, e.g. an unknown shard
                raise ValueError(answer["error"])
            raise RuntimeError(f"shard lease {op} failed: {answer['error']}")
        return answer.get("ok")

    # --- loss ----------------------------------------------------------------------

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set() or self._closing:
            return
        shards = sorted(self._owned)
        self._owned.clear()
        self.lost_reason = reason
        self.lost.set()
        log.warning("shard leases of node %s lost (%s): shards %s", self.node_id, reason, shards)
        self._kill()  # end the session so the server frees our locks now rather than when it notices

    # --- leases --------------------------------------------------------------------

    async def claim(self, shard: int) -> int | None:
        """Take the shard if no other session holds it: the new epoch, or None.

        Claiming bumps the shard's epoch (fencing out every earlier holder's writes) and
        records us as its owner. A shard we already hold answers its current epoch.
        """
        if shard in self._owned and not self.lost.is_set():
            return self._owned[shard]
        with trio.CancelScope(shield=True):  # a lock taken is always recorded (or the session killed)
            epoch = await self._call("claim", shard=shard, now=self.clock.now())
        if self.lost.is_set():  # the session ended while the claim was answered
            raise LeasesLostError(f"shard leases lost: {self.lost_reason}")
        if epoch is None:
            return None
        if not isinstance(epoch, int):  # the lock may be ours but unrecorded: end the session
            self._mark_lost(f"claim of shard {shard} answered {epoch!r}, not an epoch")
            raise LeasesLostError(f"shard leases lost: {self.lost_reason}")
        self._owned[shard] = epoch
        return epoch

    async def release(self, shard: int) -> None:
        """Give the shard up: clear our owner mark (if still ours) and unlock it.

        It leaves ``owned()`` first, so stop writing to the shard (drain its actors) before
        releasing. The epoch is not changed; the next claimer bumps it.
        """
        epoch = self._owned.pop(shard, None)
        if epoch is None:
            return
        with trio.CancelScope(shield=True):
            await self._call("release", shard=shard, epoch=epoch, now=self.clock.now())

    async def heartbeat(self, timeout: float) -> bool:
        """Check the session with ``SELECT 1`` within ``timeout`` seconds (and keep the child's
        ``parent_timeout`` from firing).

        True while healthy. On failure or timeout every lease is marked lost (``owned()``
        becomes empty, ``lost`` is set, the session is terminated) and the answer is False.
        """
        if self.lost.is_set():
            return False
        try:
            stats = await self._call("ping", _timeout=timeout)
        except (LeasesLostError, RuntimeError):
            return False
        if isinstance(stats, dict):
            self.stats = stats
        return not self.lost.is_set()

    async def keepalive(self) -> dict[str, Any]:
        """Tell the child this node is alive (``parent_timeout``) and fetch its heartbeat counters.

        Cheap: no statement; the child heartbeats on its own (``heartbeat_interval``)."""
        stats = await self._call("ping", check=False, _timeout=max(self.op_timeout, 30.0))
        if isinstance(stats, dict):
            self.stats = stats
        return self.stats
