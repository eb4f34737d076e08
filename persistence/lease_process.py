"""The shard-lease session, run in a process of its own (``python -m persistence.lease_process``).

Why a process: the session's locks are the node's shard ownership, and the server ends the
session when it hears nothing for ``idle_session_timeout``. In the node's process every step of
a heartbeat waits for the trio loop, which a loaded node keeps busy for seconds; a thread does
not help, because trio's loop releases and retakes the GIL so often that a waiting thread is
starved (measured: a ``SELECT 1`` in a thread took 4 s at the median under a busy trio loop,
against 0.6 ms idle). Here the heartbeat has a loop, a connection and a CPU scheduler entry of
its own.

It still dies with the node: the parent's pipe is its stdin, so EOF (the node exited or was
killed, the kernel closes the pipe either way) ends the session at once, and ``parent_timeout`` ends it when a live but frozen node
(SIGSTOP, a hung loop) has sent nothing for that long — a frozen node must lose its shards.

The protocol is one JSON object per line. The parent sends ``{"id", "op", ...}`` with ``op`` one
of ``claim``, ``release``, ``ping`` (also the keep-alive) and ``close``; the child answers
``{"id", "ok": value}`` or ``{"id", "error": text, "session": bool}`` (``session``: the session
itself failed). Unasked, it sends ``{"ready": backend_pid}`` once connected and ``{"lost":
reason}`` when the session ends, and then exits. Logs go to stderr; stdout carries only the
protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any, TypedDict

import asyncpg

log = logging.getLogger("dw.lease_process")

SESSION_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown (pg_terminate_backend), ...
    OSError,
    asyncio.TimeoutError,
)


class LeaseConfig(TypedDict):
    """The session's settings, passed by ``pg_shard_leases.ShardLeases.open`` as JSON (argv[1])."""

    dsn: str
    node_id: str
    application_name: str  # dw-shard-leases:<node id>, whole: the parent checked it fits (pg_shard_leases)
    lock_namespace: int
    member_key: int  # held shared in lock_namespace while the session lives: its cluster membership
    idle_session_timeout: float | None
    op_timeout: float
    heartbeat_interval: float | None
    heartbeat_timeout: float
    parent_timeout: float | None


class LeaseSession:
    def __init__(self, cfg: LeaseConfig) -> None:
        self.cfg = cfg
        self.conn: asyncpg.Connection | None = None
        self.lock = asyncio.Lock()  # one connection: one statement at a time
        self.out = sys.stdout
        self.done = asyncio.Event()
        self.last_heard = time.monotonic()
        self.stats = {"heartbeats": 0, "max_ms": 0.0, "slow": 0, "last_ms": 0.0}

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.out.write(json.dumps(message) + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            self.done.set()  # the node is gone

    def lost(self, reason: str) -> None:
        if self.done.is_set():
            return
        log.warning("shard lease session of %s ended: %s", self.cfg["node_id"], reason)
        self.send({"lost": reason})
        if self.conn is not None and not self.conn.is_closed():
            self.conn.terminate()  # the server frees the locks now
        self.done.set()

    async def connect(self) -> None:
        settings = {"application_name": self.cfg["application_name"]}
        idle = self.cfg.get("idle_session_timeout")
        if idle:
            settings["idle_session_timeout"] = str(max(1, int(idle * 1000)))
        self.conn = await asyncpg.connect(self.cfg["dsn"], server_settings=settings, timeout=self.cfg["op_timeout"])
        # Membership of this cluster (its database and lock namespace), which is what the
        # members' lease_sessions look for; held before "ready", so an open session is counted.
        joined = await asyncio.wait_for(
            self.conn.fetchval(
                "SELECT pg_try_advisory_lock_shared($1::int4, $2::int4)", self.cfg["lock_namespace"], self.cfg["member_key"]
            ),
            self.cfg["op_timeout"],
        )
        if not joined:  # someone holds the key exclusively: not a lease session of ours
            raise RuntimeError(f"the membership lock ({self.cfg['lock_namespace']}, {self.cfg['member_key']}) is held exclusively")
        self.conn.add_termination_listener(lambda _conn: self.lost("the lease session was terminated"))
        self.send({"ready": self.conn.get_server_pid()})

    async def heartbeat(self) -> None:
        """SELECT 1 within the timeout: the round trip, counted; a failure ends the session."""
        assert self.conn is not None
        started = time.monotonic()
        async with self.lock:
            await asyncio.wait_for(self.conn.fetchval("SELECT 1"), self.cfg["heartbeat_timeout"])
        took = (time.monotonic() - started) * 1000
        self.stats["heartbeats"] += 1
        self.stats["last_ms"] = round(took, 2)
        self.stats["max_ms"] = round(max(self.stats["max_ms"], took), 2)
        if took > 1000:
            self.stats["slow"] += 1

    async def heartbeats(self) -> None:
        interval = self.cfg.get("heartbeat_interval")
        parent_timeout = self.cfg.get("parent_timeout")
        while not self.done.is_set():
            await asyncio.sleep(interval or 0.5)
            if parent_timeout and time.monotonic() - self.last_heard > parent_timeout:
                self.lost(f"the node sent nothing for {parent_timeout:.0f}s (frozen or hung)")
                return
            if interval:
                try:
                    await self.heartbeat()
                except SESSION_ERRORS as exc:
                    self.lost(f"heartbeat failed: {exc!r}")
                    return

    async def handle(self, request: dict[str, Any]) -> None:
        rid, op = request.get("id"), request.get("op")
        try:
            if op == "ping":
                if request.get("check", True):
                    await self.heartbeat()
                result: object = dict(self.stats)
            elif op == "claim":
                result = await self.claim(request["shard"], request["now"])
            elif op == "release":
                await self.release(request["shard"], request["epoch"], request["now"])
                result = None
            elif op == "close":
                await self.close(request.get("shards") or [], request["now"])
                self.send({"id": rid, "ok": True})
                self.done.set()
                return
            else:
                raise ValueError(f"unknown op {op!r}")
        except SESSION_ERRORS as exc:
            self.send({"id": rid, "error": repr(exc), "session": True})
            self.lost(f"{op} failed: {exc!r}")
            return
        except Exception as exc:  # noqa: BLE001 - a statement failed; the session may still be fine
            self.send({"id": rid, "error": str(exc), "type": type(exc).__name__,
                       "session": bool(self.conn is None or self.conn.is_closed())})
            return
        self.send({"id": rid, "ok": result})

    async def claim(self, shard: int, now: float) -> int | None:
        conn, ns = self.conn, self.cfg["lock_namespace"]
        assert conn is not None
        async with self.lock:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1::int4, $2::int4)", ns, shard):
                return None
            try:
                epoch = await conn.fetchval(
                    "UPDATE shards SET epoch = epoch + 1, owner_node = $1, updated_at = $2 WHERE shard_id = $3"
                    " RETURNING epoch",
                    self.cfg["node_id"], now, shard,
                )
            except Exception:
                if not conn.is_closed():
                    await conn.fetchval("SELECT pg_advisory_unlock($1::int4, $2::int4)", ns, shard)
                raise
            if epoch is None:
                await conn.fetchval("SELECT pg_advisory_unlock($1::int4, $2::int4)", ns, shard)
                raise ValueError(f"shard {shard} does not exist (ensure_cluster creates shards 0..shard_count-1)")
            return int(epoch)

    async def release(self, shard: int, epoch: int, now: float) -> None:
        conn = self.conn
        assert conn is not None
        async with self.lock:
            await conn.execute(
                "UPDATE shards SET owner_node = NULL, updated_at = $4 WHERE shard_id = $1 AND owner_node = $2 AND epoch = $3",
                shard, self.cfg["node_id"], epoch, now,
            )
            await conn.fetchval("SELECT pg_advisory_unlock($1::int4, $2::int4)", self.cfg["lock_namespace"], shard)

    async def close(self, shards: list[int], now: float) -> None:
        conn = self.conn
        if conn is None or conn.is_closed():
            return
        async with self.lock:
            if shards:
                await conn.execute(
                    "UPDATE shards SET owner_node = NULL, updated_at = $3 WHERE shard_id = ANY($1::int4[]) AND owner_node = $2",
                    shards, self.cfg["node_id"], now,
                )
            await conn.close()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            await self.connect()
        except Exception as exc:  # noqa: BLE001 - told to the node, which retries with backoff
            self.send({"lost": f"cannot open the lease session: {exc!r}"})
            if self.conn is not None and not self.conn.is_closed():
                self.conn.terminate()
            return
        beating = asyncio.ensure_future(self.heartbeats())
        try:
            while not self.done.is_set():
                read = asyncio.ensure_future(reader.readline())
                finished = asyncio.ensure_future(self.done.wait())
                await asyncio.wait({read, finished}, return_when=asyncio.FIRST_COMPLETED)
                finished.cancel()
                if not read.done():
                    read.cancel()
                    break
                line = read.result()
                if not line:
                    self.lost("the node closed its end (it stopped)")
                    break
                self.last_heard = time.monotonic()
                await self.handle(json.loads(line))
        finally:
            beating.cancel()
            if self.conn is not None and not self.conn.is_closed():
                self.conn.terminate()


def main() -> int:
    # No PR_SET_PDEATHSIG: trio starts processes from a worker thread, and the signal follows that
    # thread's exit (after ten idle seconds), not the node's. The pipe's EOF is what tells.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = json.loads(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node handles Ctrl-C and closes us in order
    asyncio.run(LeaseSession(cfg).serve())
    return 0


if __name__ == "__main__":
    os._exit(main())
