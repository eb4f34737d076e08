"""The PostgreSQL journal: asyncpg through trio-asyncio, with group commit.

Same interface and semantics as ``SqliteJournal``. The rules of STACK.md section 3 apply:

- every unit of database work is one asyncio coroutine, called from trio with exactly one
  ``aio_as_trio(...)``; no transaction ever spans a trio await;
- timeouts and cancellation live on the trio side only: the pool is created with
  ``max_inactive_connection_lifetime=0`` and nothing passes asyncpg a ``timeout=`` or
  ``command_timeout`` (trio-asyncio never purges cancelled asyncio timers);
- ``trio_asyncio`` is imported before asyncpg.

A group commit is a single multi-row statement: one ``unnest`` INSERT per table (records
plain, projections as ``INSERT ... ON CONFLICT DO UPDATE``, deleted workers as a DELETE), all
in data-modifying CTEs of one statement. One statement is one transaction and one round trip,
whatever the number of batches in the group.

Fencing lives in the same statement. Its first CTE reads the fenced shards' epochs with
``SELECT ... FOR SHARE``: the row locks are held until the statement's transaction commits,
so an epoch bump by another node (``UPDATE shards``) either committed before (and READ
COMMITTED's re-check makes us read the new epoch) or waits until after our commit. Every
write is gated on "every (shard, epoch) fenced by the group matches"; when one does not, the
statement writes nothing and returns the epochs it read, the batches whose fences mismatch
fail with ``FencedError``, and the rest are written again. So a group with matching fences
(the common case) still costs one round trip, fenced or not.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

import trio
import trio_asyncio  # noqa: F401 - must be imported before asyncpg (STACK.md section 3)
from trio_asyncio import aio_as_trio

# isort: split
import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .group_commit import GroupCommit, Pending
from .journal import (
    SHARD_COUNT_KEY,
    Batch,
    ClusterJournal,
    ConflictError,
    InstanceRow,
    NamespaceRow,
    NodeRow,
    ObjectRow,
    Predicate,
    RunRow,
    StoreMisconfigured,
    StoreUnavailable,
    WorkerRow,
    check_shard_count,
    fence_violation,
    shard_count_mismatch,
)
from .migrations import POSTGRES_MIGRATIONS
from .pg_shard_leases import LEASE_SESSION_PREFIX, MEMBER_LOCK_KEY
from .vocabulary import TERMINAL_STATUSES

log = logging.getLogger("dw.journal")

P = ParamSpec("P")
T = TypeVar("T")

# pg_advisory_xact_lock key held while migrating (per database; released at commit).
# Bigint spelling of b"dwschema". Shard locks must not use this key.
MIGRATION_LOCK_KEY = int.from_bytes(b"dwschema", "big")
# pg_advisory_xact_lock key held by ensure_cluster while it creates the shards. Bigint
# spelling of b"dwclustr". (Shard leases use the two-int form, a separate lock space.)
CLUSTER_LOCK_KEY = int.from_bytes(b"dwclustr", "big")

PING_TIMEOUT = 5.0  # seconds; ping() answers False after this long
# Seconds for a graceful pool close before its connections are terminated. At shutdown every
# task that used the pool is already cancelled, so a connection still "in use" is one a
# cancelled statement left behind (a session the database ended, a cut): waiting longer gains nothing.
CLOSE_TIMEOUT = 3.0

_RUN_COLS = (
    "run_id, namespace, workflow_id, run_number, workflow_type, task_queue, status, closed_reason, "
    "business_key, started_at, closed_at, wake_at, attention, last_seq, search_attributes, memo, detail"
)
_INSTANCE_COLS = "namespace, workflow_id, workflow_type, current_run_id, run_count, created_at"
_NAMESPACE_COLS = "name, description, retention_days, status, created_at, updated_at"
_WORKER_COLS = "namespace, worker_id, task_queue, runtime, registered_at, last_seen, info"
_TERMINAL = "(" + ",".join(f"'{status}'" for status in TERMINAL_STATUSES) + ")"

# (table, [(column, element type)], key columns) for each upserted projection, in the
# order of the statement's parameters.
_UPSERTS: list[tuple[str, list[tuple[str, str]], tuple[str, ...]]] = [
    (
        "runs",
        [
            ("run_id", "text"), ("namespace", "text"), ("workflow_id", "text"), ("run_number", "int8"),
            ("workflow_type", "text"), ("task_queue", "text"), ("status", "text"), ("closed_reason", "text"),
            ("business_key", "text"), ("started_at", "float8"), ("closed_at", "float8"), ("wake_at", "float8"),
            ("attention", "bool"), ("last_seq", "int8"), ("search_attributes", "text"), ("memo", "text"),
            ("detail", "text"),
        ],
        ("run_id",),
    ),
    (
        "instances",
        [
            ("namespace", "text"), ("workflow_id", "text"), ("workflow_type", "text"), ("current_run_id", "text"),
            ("run_count", "int8"), ("created_at", "float8"),
        ],
        ("namespace", "workflow_id"),
    ),
    (
        "namespaces",
        [
            ("name", "text"), ("description", "text"), ("retention_days", "int8"), ("status", "text"),
            ("created_at", "float8"), ("updated_at", "float8"),
        ],
        ("name",),
    ),
    (
        "workers",
        [
            ("namespace", "text"), ("worker_id", "text"), ("task_queue", "text"), ("runtime", "text"),
            ("registered_at", "float8"), ("last_seen", "float8"), ("info", "text"),
        ],
        ("namespace", "worker_id"),
    ),
    (
        "objects",
        [("namespace", "text"), ("kind", "text"), ("name", "text"), ("body", "text"), ("updated_at", "float8")],
        ("namespace", "kind", "name"),
    ),
]


def _build_write_sql() -> str:
    n = 2  # $1, $2: the fence's (shard, epoch) pairs

    def arrays(types: Iterable[str]) -> str:
        nonlocal n
        out = []
        for t in types:
            n += 1
            out.append(f"${n}::{t}[]")
        return ", ".join(out)

    gate = "(SELECT ok FROM fence_ok)"
    ctes = [
        # Locked until commit: an epoch bump by a claim waits for us, or we read its result.
        "fence AS (SELECT shard_id, epoch FROM shards WHERE shard_id = ANY($1::int4[]) ORDER BY shard_id FOR SHARE)",
        "fence_ok AS (SELECT NOT EXISTS (SELECT 1 FROM unnest($1::int4[], $2::int8[]) AS f(shard_id, epoch)"
        " LEFT JOIN fence s ON s.shard_id = f.shard_id WHERE s.epoch IS DISTINCT FROM f.epoch) AS ok)",
        "w_records AS (INSERT INTO records (run_id, jseq, body)"
        f" SELECT * FROM unnest({arrays(['text', 'int8', 'bytea'])}) WHERE {gate})",
    ]
    for table, cols, key in _UPSERTS:
        names = ", ".join(c for c, _ in cols)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in cols if c not in key)
        ctes.append(
            f"w_{table} AS (INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays(t for _, t in cols)})"
            f" WHERE {gate} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates})"
        )
    ctes.append(
        f"w_workers_deleted AS (DELETE FROM workers w USING unnest({arrays(['text', 'text'])}) AS d(namespace, worker_id)"
        f" WHERE w.namespace = d.namespace AND w.worker_id = d.worker_id AND {gate})"
    )
    return (
        "WITH " + ",\n".join(ctes)
        + "\nSELECT (SELECT ok FROM fence_ok) AS ok,"
        " (SELECT COALESCE(array_agg(shard_id ORDER BY shard_id), '{}') FROM fence) AS shard_ids,"
        " (SELECT COALESCE(array_agg(epoch ORDER BY shard_id), '{}') FROM fence) AS epochs"
    )


# One statement for every group: empty arrays insert nothing, so it is prepared once per connection.
_WRITE_SQL = _build_write_sql()


def _columns(rows: Iterable[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows to per-column lists (the arrays that ``unnest`` zips back into rows)."""
    cols: list[list[object]] = [[] for _ in range(width)]
    for row in rows:
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


def _write_params(batches: Sequence[Batch]) -> list[list[object]]:
    """The statement's parameters for a group of batches, applied in order.

    Projection rows are reduced to the last one per key: the end state of applying every
    upsert and delete in order (what SQLite's sequential ``INSERT OR REPLACE`` gives), and
    ``ON CONFLICT DO UPDATE`` may touch a row only once per statement. Rows are sorted by
    key so concurrent writers (two nodes) lock rows in the same order and cannot deadlock.
    Records are not deduplicated: a repeated position must fail as a conflict.
    """
    records: list[tuple[str, int, bytes]] = []
    fences: set[tuple[int, int]] = set()
    runs: dict[str, tuple[object, ...]] = {}
    instances: dict[tuple[str, str], tuple[object, ...]] = {}
    namespaces: dict[str, tuple[object, ...]] = {}
    workers: dict[tuple[str, str], tuple[object, ...] | None] = {}  # None: deleted
    objects: dict[tuple[str, str, str], tuple[object, ...]] = {}
    for batch in batches:
        for o in batch.objects:
            objects[(o.namespace, o.kind, o.name)] = (o.namespace, o.kind, o.name, json.dumps(o.body), o.updated_at)
        records.extend(batch.records)
        fences.update(batch.fence.items())
        for r in batch.runs:
            runs[r.run_id] = (
                r.run_id, r.namespace, r.workflow_id, r.run_number, r.workflow_type, r.task_queue, r.status,
                r.closed_reason, r.business_key, r.started_at, r.closed_at, r.wake_at, bool(r.attention),
                r.last_seq, json.dumps(r.search_attributes), json.dumps(r.memo), json.dumps(r.detail),
            )
        for i in batch.instances:
            instances[(i.namespace, i.workflow_id)] = (
                i.namespace, i.workflow_id, i.workflow_type, i.current_run_id, i.run_count, i.created_at,
            )
        for n in batch.namespaces:
            namespaces[n.name] = (n.name, n.description, n.retention_days, n.status, n.created_at, n.updated_at)
        for w in batch.workers:
            workers[(w.namespace, w.worker_id)] = None if w.deleted else (
                w.namespace, w.worker_id, w.task_queue, w.runtime, w.registered_at, w.last_seen, json.dumps(w.info),
            )
    upserted_workers = {k: v for k, v in workers.items() if v is not None}
    deleted_workers = [k for k, v in workers.items() if v is None]
    upserts = (
        [runs[k] for k in sorted(runs)],
        [instances[k] for k in sorted(instances)],
        [namespaces[k] for k in sorted(namespaces)],
        [upserted_workers[k] for k in sorted(upserted_workers)],
        [objects[k] for k in sorted(objects)],
    )
    params = _columns(sorted(fences), 2)
    params += _columns(sorted(records, key=lambda r: (r[0], r[1])), 3)
    for rows, (_, cols, _) in zip(upserts, _UPSERTS, strict=True):
        params += _columns(rows, len(cols))
    params += _columns(sorted(deleted_workers), 2)
    return params


# The server is away (down, restarting, unreachable) or ended our connection: retry later.
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # includes CannotConnectNowError ("the database system is starting up")
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress" after a cut
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53300 too many connections
    OSError,  # refused, reset, unreachable
    asyncpg.InternalClientError,  # "cannot switch to state 12; another operation is in progress": a connection left mid-operation by a cut
)
# The node's settings are wrong: retrying cannot help.
_MISCONFIGURED = (
    asyncpg.InvalidAuthorizationSpecificationError,  # unknown role, no pg_hba entry
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidCatalogNameError,  # the database does not exist
)


def _translate(exc: Exception) -> Exception:
    """Backend errors as the journal's own: a unique violation on records' (run_id, jseq) or on
    instances' workflow id (held by another namespace) is a
    ConflictError, a lost or refused connection StoreUnavailable, bad settings StoreMisconfigured;
    anything else as is."""
    if isinstance(exc, asyncpg.UniqueViolationError) and getattr(exc, "table_name", None) in ("records", "instances"):
        err: Exception = ConflictError(str(exc))
    elif isinstance(exc, _MISCONFIGURED):
        err = StoreMisconfigured(f"PostgreSQL refused the node's settings: {exc}")
    elif isinstance(exc, _UNAVAILABLE):
        err = StoreUnavailable(f"PostgreSQL is unreachable: {type(exc).__name__}: {exc}")
    else:
        return exc
    err.__cause__ = exc
    return err


def _aio(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``trio_asyncio.aio_as_trio`` with its signature: trio-asyncio ships no annotations, and
    this module calls asyncio only through here, so every such call is type-checked."""
    wrapped: Callable[P, Awaitable[T]] = aio_as_trio(fn)
    return wrapped


async def _bridged(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call an asyncio coroutine function from trio; its errors come back translated."""
    try:
        return await _aio(fn)(*args, **kwargs)
    except Exception as exc:
        translated = _translate(exc)
        if translated is exc:
            raise
        raise translated from exc


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg still rolls back an open transaction before calling it; we
    leave no other session state (no SET, LISTEN or session advisory lock), so this skips the
    default reset query and its round trip on every release."""


class PostgresJournal:
    """The journal on PostgreSQL, through asyncpg and trio-asyncio.

    Every method must be called from trio code running inside ``trio_asyncio.open_loop()``
    (the node's root task opens it once), and ``aclose()`` must run before that loop closes.
    ``dsn`` is an asyncpg DSN; unknown query parameters become server settings, so
    ``...?search_path=myschema`` puts the tables in an existing schema ``myschema``.

    ``open()`` creates the pool (at most ``pool_size`` connections) and applies migrations.
    ``run_writer`` is the group-commit loop and belongs in the node's root nursery; each
    ``append`` waits until its batch is committed. Reads go through the same pool, so they
    never wait on a commit.
    """

    def __init__(self, dsn: str, *, max_batch: int = 512, pool_size: int = 10, application_name: str | None = None) -> None:
        if max_batch < 1 or pool_size < 1:
            raise ValueError("max_batch and pool_size must be at least 1")
        self.dsn = dsn
        self.application_name = application_name  # pg_stat_activity tells an operator whose sessions these are
        self.max_batch = max_batch
        self.pool_size = pool_size
        self._group = GroupCommit(max_batch)
        self.commit_stats = self._group.stats
        self._pool: asyncpg.Pool | None = None
        self.commits = 0
        self.batches = 0
        self._lease_namespace: int | None = None  # lease_namespace(), once read: the schema is fixed

    # --- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        self._pool = await _bridged(self._aio_open)

    async def _aio_open(self) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=0,  # no floor to restore in the background while the database is away (it logs tracebacks)
            max_size=self.pool_size,
            max_inactive_connection_lifetime=0,
            reset=_no_reset,
            server_settings={"application_name": self.application_name[:63]} if self.application_name else None,
        )
        try:
            async with pool.acquire() as conn:
                await self._migrate(conn)
        except BaseException:
            pool.terminate()
            raise
        return pool

    @staticmethod
    async def _migrate(conn: PoolConnectionProxy) -> None:
        # The lock is taken before anything is read, so a second opener waits for the first
        # to commit and then sees its version: two first opens cannot both migrate.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            for version, statements in POSTGRES_MIGRATIONS:
                if version <= current:
                    continue
                for sql in statements:
                    await conn.execute(sql)
                await conn.execute("INSERT INTO schema_version(version) VALUES ($1)", version)
                log.info("applied migration %s", version)

    async def run_writer(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The group-commit loop; lives in the node's root nursery."""
        async def commit(group: list[Pending]) -> None:
            await _aio(self._commit_group)(group)
            if any(isinstance(p.error, StoreUnavailable) for p in group):
                await self._expire()

        await self._group.run(commit, task_status=task_status)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_TIMEOUT):
                await _aio(pool.close)()  # waits for connections in use to be released
                return
            log.warning("journal pool did not close within %ss; terminating its connections", CLOSE_TIMEOUT)
            await _aio(self._terminate)(pool)

    @staticmethod
    async def _terminate(pool: asyncpg.Pool) -> None:
        pool.terminate()

    async def _call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``_bridged``, and after a connection-level failure the pool's connections are replaced
        (one left mid-operation by a cut would fail every statement it is given next)."""
        try:
            return await _bridged(fn, *args, **kwargs)
        except StoreUnavailable:
            await self._expire()
            raise

    async def _expire(self) -> None:
        pool = self._pool
        if pool is not None:
            with trio.move_on_after(CLOSE_TIMEOUT):
                try:
                    await _aio(pool.expire_connections)()
                except Exception:  # noqa: BLE001 - best effort; the next acquire reconnects anyway
                    pass

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the journal is not open")
        return self._pool

    # --- writes --------------------------------------------------------------------

    async def append(self, batch: Batch) -> None:
        await self._group.append(batch)

    async def _commit_group(self, group: list[Pending]) -> None:
        """asyncio: commit the group in one transaction, or each batch alone if that fails.

        A fenced-out batch gets its ``FencedError`` and the rest of the group is written again
        (each round removes at least one batch, so this ends)."""
        live = group
        while live:
            try:
                epochs = await self._write([p.batch for p in live])
            except Exception as exc:  # noqa: BLE001 - reported to the appenders
                if len(live) == 1:
                    live[0].error = _translate(exc)
                    return
                break
            if epochs is None:
                self.commits += 1
                self.batches += len(live)
                return
            rest = []
            for pending in live:
                pending.error = fence_violation(pending.batch.fence, epochs)
                if pending.error is None:
                    rest.append(pending)
            if len(rest) == len(live):  # cannot happen: the statement and Python disagree
                raise AssertionError(f"the fence check refused a group whose fences match {epochs}")
            live = rest
        # One bad batch must not fail its neighbours: retry each in its own transaction. Each
        # retry acquires from the pool again, so a connection the combined attempt lost is replaced.
        for pending in live:
            try:
                epochs = await self._write([pending.batch])
            except Exception as exc:  # noqa: BLE001 - reported to the appender
                pending.error = _translate(exc)
                continue
            if epochs is None:
                self.commits += 1
                self.batches += 1
            else:
                pending.error = fence_violation(pending.batch.fence, epochs)

    async def _write(self, batches: Sequence[Batch]) -> dict[int, int] | None:
        """asyncio: write the batches in one statement (one implicit transaction: all of it
        commits or none of it does). None when written; when a fence did not match, nothing
        was written and the answer is the epochs read (shard -> epoch, absent: no such shard)."""
        params = _write_params(batches)
        async with self._require_pool().acquire() as conn:
            row = await conn.fetchrow(_WRITE_SQL, *params)
        assert row is not None  # the statement's final SELECT always returns its one row
        if row["ok"]:
            return None
        return dict(zip(row["shard_ids"], row["epochs"], strict=True))

    # --- cluster -------------------------------------------------------------------

    async def ensure_cluster(self, shard_count: int) -> int:
        check_shard_count(shard_count)
        stored = await self._call(self._aio_ensure_cluster, shard_count)
        if stored != shard_count:
            raise shard_count_mismatch(stored, shard_count)
        return stored

    async def _aio_ensure_cluster(self, shard_count: int) -> int:
        async with self._require_pool().acquire() as conn, conn.transaction():
            # Taken before the read: a second first caller waits, then sees the stored count.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CLUSTER_LOCK_KEY)
            value = await conn.fetchval("SELECT value FROM cluster_settings WHERE key = $1", SHARD_COUNT_KEY)
            if value is not None:
                return int(value)
            await conn.execute(
                "INSERT INTO cluster_settings(key, value) VALUES ($1, $2)", SHARD_COUNT_KEY, str(shard_count)
            )
            await conn.execute(
                "INSERT INTO shards(shard_id, owner_node, epoch, updated_at)"
                " SELECT g, NULL, 0, NULL FROM generate_series(0, $1::int4 - 1) AS g ON CONFLICT DO NOTHING",
                shard_count,
            )
            return shard_count

    # --- retention and namespace deletion --------------------------------------------

    async def expired_runs(self, namespace: str, cutoff: float, limit: int) -> list[str]:
        rows = await self._fetch(
            "SELECT run_id FROM runs WHERE namespace = $1 AND closed_at IS NOT NULL AND closed_at < $2"
            " ORDER BY closed_at, run_id LIMIT $3",
            namespace, cutoff, limit,
        )
        return [r[0] for r in rows]

    async def purge_runs(self, namespace: str, run_ids: list[str]) -> dict[str, int]:
        return await self._call(self._aio_purge_runs, namespace, run_ids)

    async def _aio_purge_runs(self, namespace: str, run_ids: list[str]) -> dict[str, int]:
        async with self._require_pool().acquire() as conn, conn.transaction():
            closed = [
                r[0] for r in await conn.fetch(
                    "SELECT run_id FROM runs WHERE run_id = ANY($1::text[]) AND namespace = $2 AND closed_at IS NOT NULL",
                    run_ids, namespace,
                )
            ]
            events = await conn.execute("DELETE FROM records WHERE run_id = ANY($1::text[])", closed)
            runs = await conn.execute("DELETE FROM runs WHERE run_id = ANY($1::text[])", closed)
            await conn.execute("DELETE FROM instances WHERE namespace = $1 AND current_run_id = ANY($2::text[])", namespace, closed)
            return {"runs": int(runs.split()[-1]), "history_events": int(events.split()[-1])}

    async def delete_namespace(self, namespace: str) -> dict[str, int]:
        return await self._call(self._aio_delete_namespace, namespace)

    async def _aio_delete_namespace(self, namespace: str) -> dict[str, int]:
        async with self._require_pool().acquire() as conn, conn.transaction():
            like = namespace.replace("!", "!!").replace("%", "!%").replace("_", "!_")

            async def count(sql: str, *args: object) -> int:
                return int((await conn.execute(sql, *args)).split()[-1])

            await conn.execute("DELETE FROM records WHERE run_id IN (SELECT run_id FROM runs WHERE namespace = $1)", namespace)
            await conn.execute("DELETE FROM records WHERE run_id LIKE $1 ESCAPE '!'", f"schedule:{like}:%")
            out = {
                "workflow_runs": await count("DELETE FROM runs WHERE namespace = $1", namespace),
                "workflow_schedules": await count("DELETE FROM objects WHERE namespace = $1 AND kind = 'schedule'", namespace),
                "search_attribute_definitions": await count(
                    "DELETE FROM objects WHERE namespace = $1 AND kind = 'search_attribute'", namespace
                ),
                "workflow_worker_registrations": await count("DELETE FROM workers WHERE namespace = $1", namespace),
            }
            await conn.execute("DELETE FROM instances WHERE namespace = $1", namespace)
            await conn.execute("DELETE FROM objects WHERE namespace = $1", namespace)
            await conn.execute("DELETE FROM namespaces WHERE name = $1", namespace)
            return out

    async def cluster_secret(self) -> bytes:
        """The key nodes sign internal requests with: made once per cluster, kept in the database."""
        import secrets

        candidate = secrets.token_hex(32)
        rows = await self._fetch(
            # DO UPDATE (to itself) returns the row that won, also when another node inserted it
            # concurrently; DO NOTHING plus a SELECT could see neither under READ COMMITTED.
            "INSERT INTO cluster_settings(key, value) VALUES ('cluster_secret', $1)"
            " ON CONFLICT (key) DO UPDATE SET value = cluster_settings.value RETURNING value",
            candidate,
        )
        return bytes.fromhex(rows[0][0])

    async def claim_once(self, items: list[tuple[bytes, float]], purge_before: float | None) -> list[bool]:
        """Record each key until its expiry; True for the keys no one recorded before (first use).

        One statement for the whole group; a key twice in the group is first only once."""
        return await self._call(self._aio_claim_once, items, purge_before)

    async def _aio_claim_once(self, items: list[tuple[bytes, float]], purge_before: float | None) -> list[bool]:
        pool = self._require_pool()
        if purge_before is not None:
            await pool.execute("DELETE FROM seen_signatures WHERE expires_at < $1", purge_before)
        rows = await pool.fetch(
            "INSERT INTO seen_signatures(key, expires_at) SELECT * FROM unnest($1::bytea[], $2::float8[])"
            " ON CONFLICT (key) DO NOTHING RETURNING key",
            [k for k, _ in items], [e for _, e in items],
        )
        new = {bytes(r[0]) for r in rows}
        out = []
        for key, _ in items:
            out.append(key in new)
            new.discard(key)
        return out

    async def clear_owner_marks(self, node_id: str, keep: list[int]) -> int:
        """Forget ``node_id`` as owner of every shard but ``keep`` (marks a lost session left)."""
        rows = await self._fetch(
            "UPDATE shards SET owner_node = NULL WHERE owner_node = $1 AND NOT (shard_id = ANY($2::int4[])) RETURNING shard_id",
            node_id, keep,
        )
        return len(rows)

    async def shard_epochs(self) -> dict[int, tuple[str | None, int]]:
        rows = await self._fetch("SELECT shard_id, owner_node, epoch FROM shards ORDER BY shard_id")
        return {r[0]: (r[1], r[2]) for r in rows}

    async def upsert_node(
        self, node_id: str, advertise_url: str | None, started_at: float | None, heartbeat_at: float | None,
        status: str,
    ) -> None:
        await self._call(self._require_pool().execute,
            "INSERT INTO nodes(node_id, advertise_url, started_at, heartbeat_at, status) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (node_id) DO UPDATE SET advertise_url = EXCLUDED.advertise_url,"
            " started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at, status = EXCLUDED.status",
            node_id, advertise_url, started_at, heartbeat_at, status,
        )

    async def list_nodes(self) -> list[NodeRow]:
        rows = await self._fetch(
            "SELECT node_id, advertise_url, started_at, heartbeat_at, status FROM nodes ORDER BY node_id"
        )
        return [NodeRow(*r) for r in rows]

    async def lease_namespace(self) -> int:
        """The first key of this cluster's shard locks.

        Advisory locks are per database, not per schema: deriving the key from the schema
        keeps two clusters (or test runs) in one database from taking each other's shards.
        """
        rows = await self._fetch("SELECT current_schema()")
        return zlib.crc32(f"dw-shards:{rows[0][0]}".encode()) & 0x7FFFFFFF

    async def lease_sessions(self) -> set[str]:
        """Node ids whose shard-lease session is connected right now (their locks are live).

        Only this cluster's: pg_stat_activity lists every session of the server, so a session
        counts only while it holds this cluster's membership lock (``MEMBER_LOCK_KEY`` in
        ``lease_namespace()``, taken shared by every lease session as it connects) in this
        database. A namesake in another schema or database must not keep a dead member live.
        """
        if self._lease_namespace is None:
            self._lease_namespace = await self.lease_namespace()
        rows = await self._fetch(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
            "  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            "  AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid"
            "  AND a.datname = current_database() AND starts_with(a.application_name, $3)",
            self._lease_namespace & 0xFFFFFFFF, MEMBER_LOCK_KEY & 0xFFFFFFFF, LEASE_SESSION_PREFIX,
        )
        return {r[0].removeprefix(LEASE_SESSION_PREFIX) for r in rows}

    # --- reads ---------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        return await self._call(self._require_pool().fetch, sql, *args)

    async def ping(self) -> bool:
        try:
            with trio.move_on_after(PING_TIMEOUT):
                return bool(await _aio(self._require_pool().fetchval)("SELECT 1") == 1)
        except Exception:  # noqa: BLE001 - health reports, never raises
            return False
        return False

    async def read_records(self, run_id: str) -> list[bytes]:
        rows = await self._fetch("SELECT body FROM records WHERE run_id = $1 ORDER BY jseq", run_id)
        return [r[0] for r in rows]

    @staticmethod
    def _run(row: asyncpg.Record) -> RunRow:
        return RunRow(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10], row[11],
            bool(row[12]), row[13], json.loads(row[14] or "{}"), json.loads(row[15] or "{}"), json.loads(row[16] or "{}"),
        )

    async def get_run(self, run_id: str) -> RunRow | None:
        rows = await self._fetch(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = $1", run_id)
        return self._run(rows[0]) if rows else None

    async def get_instance(self, namespace: str, workflow_id: str) -> InstanceRow | None:
        rows = await self._fetch(
            f"SELECT {_INSTANCE_COLS} FROM instances WHERE namespace = $1 AND workflow_id = $2", namespace, workflow_id
        )
        return InstanceRow(*rows[0]) if rows else None

    async def find_instances(self, workflow_id: str) -> list[InstanceRow]:
        """Every namespace's instance of this id: one read answers both start checks."""
        rows = await self._fetch(f"SELECT {_INSTANCE_COLS} FROM instances WHERE workflow_id = $1", workflow_id)
        return [InstanceRow(*r) for r in rows]

    async def list_instance_runs(self, namespace: str, workflow_id: str) -> list[RunRow]:
        rows = await self._fetch(
            f"SELECT {_RUN_COLS} FROM runs WHERE namespace = $1 AND workflow_id = $2 ORDER BY run_number",
            namespace, workflow_id,
        )
        return [self._run(r) for r in rows]

    async def list_runs(
        self,
        namespace: str,
        *,
        workflow_type: str | None = None,
        statuses: list[str] | None = None,
        query: str | None = None,
        predicates: Sequence[Predicate] = (),
        after: tuple[float, str] | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[RunRow]:
        args: list[object] = [namespace]

        def param(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        where = ["namespace = $1"]
        if workflow_type:
            where.append(f"workflow_type = {param(workflow_type)}")
        if statuses:
            where.append(f"status = ANY({param(list(statuses))}::text[])")
        if query:
            # Substring match with LIKE metacharacters taken literally. ILIKE on "C"-collated
            # columns folds ASCII case only, like SQLite's LIKE.
            like = param("%" + query.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
            where.append(f"(workflow_id ILIKE {like} ESCAPE '!' OR business_key ILIKE {like} ESCAPE '!')")
        for pred in predicates:
            where.append(_pg_predicate(pred, param))
        if after is not None:  # keyset: the (namespace, started_at DESC, run_id DESC) index walks on
            where.append(f"(started_at, run_id) < ({param(after[0])}::float8, {param(after[1])}::text)")
        # SQLite reads a negative LIMIT as "no limit" and a negative OFFSET as 0; PostgreSQL
        # rejects both, so they are mapped to the same meaning.
        sql = (
            f"SELECT {_RUN_COLS} FROM runs WHERE {' AND '.join(where)}"
            f" ORDER BY started_at DESC, run_id DESC LIMIT {param(limit if limit >= 0 else None)}"
            f" OFFSET {param(max(offset, 0))}"
        )
        rows = await self._fetch(sql, *args)
        return [self._run(r) for r in rows]

    async def runs_to_recover(self) -> list[RunRow]:
        rows = await self._fetch(
            f"SELECT {_RUN_COLS} FROM runs WHERE (status NOT IN {_TERMINAL} AND (attention OR wake_at IS NOT NULL))"
            f" OR (status IN {_TERMINAL} AND attention)"  # closed parents that still owe parent-close policies
        )
        return [self._run(r) for r in rows]

    async def list_namespaces(self) -> list[NamespaceRow]:
        rows = await self._fetch(f"SELECT {_NAMESPACE_COLS} FROM namespaces ORDER BY name")
        return [NamespaceRow(*r) for r in rows]

    async def list_objects(self, kind: str, namespace: str | None = None) -> list[ObjectRow]:
        if namespace is None:
            rows = await self._fetch("SELECT namespace, kind, name, body, updated_at FROM objects WHERE kind = $1 ORDER BY namespace, name", kind)
        else:
            rows = await self._fetch(
                "SELECT namespace, kind, name, body, updated_at FROM objects WHERE kind = $1 AND namespace = $2 ORDER BY name",
                kind, namespace,
            )
        return [ObjectRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def list_workers(self) -> list[WorkerRow]:
        rows = await self._fetch(f"SELECT {_WORKER_COLS} FROM workers ORDER BY namespace, worker_id")
        return [WorkerRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "{}")) for r in rows]


_PG_OPS = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


def _pg_predicate(pred: Predicate, param: Callable[[object], str]) -> str:
    """SQL for one filter condition. Equality on a custom attribute is jsonb containment,
    which the GIN index on ``dw_sa_jsonb(search_attributes)`` answers."""
    if pred.column is not None:
        if pred.op in ("in", "not_in"):
            clause = f"{pred.column} = ANY({param(pred.value_list())}::text[])"
            return f"NOT ({clause})" if pred.op == "not_in" else clause
        cast = "::float8" if isinstance(pred.value, float) else "::text"
        if pred.op == "!=":
            return f"({pred.column} IS NULL OR {pred.column} <> {param(pred.value)}{cast})"
        return f"{pred.column} {_PG_OPS[pred.op]} {param(pred.value)}{cast}"
    doc = "dw_sa_jsonb(search_attributes)"
    name = str(pred.attribute)
    if pred.op in ("=", "!="):
        value = [pred.value] if pred.type == "keyword_list" else pred.value
        clause = f"{doc} @> {param(json.dumps({name: value}))}::jsonb"
        return f"NOT COALESCE({clause}, FALSE)" if pred.op == "!=" else clause
    if pred.type in ("int", "double"):
        # a run may hold a value of another type under the name (set before the attribute was
        # registered, or by a workflow): it does not match, rather than failing the cast
        key = param(name)
        number = f"CASE WHEN jsonb_typeof({doc} -> {key}) = 'number' THEN ({doc} ->> {key})::numeric END"
        return f"{number} {_PG_OPS[pred.op]} {param(str(pred.value))}::numeric"
    return f"({doc} ->> {param(name)}) {_PG_OPS[pred.op]} {param(str(pred.value))}::text"


# Checked by mypy: the PostgreSQL journal is a complete ``ClusterJournal`` (a missing method
# or a signature that drifted from the protocol fails the type check).
_JOURNAL: type[ClusterJournal] = PostgresJournal
