"""The embedded journal: stdlib sqlite3 in WAL mode with group commit.

One writer task drains every pending batch and commits them in a single transaction
on one thread hop (a hop costs ~130 µs here, an fsync more), then wakes each appender.
``synchronous=FULL`` makes every acknowledged commit survive an OS crash; group commit
keeps that affordable. Reads use their own connection so they never wait on a commit.

Fenced batches are checked inside the group's ``BEGIN IMMEDIATE`` transaction, which holds
SQLite's write lock, so no epoch can change between the check and the commit. A batch whose
fence does not match is skipped (its neighbours still commit in the same transaction).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from .group_commit import GroupCommit, Pending
from .journal import (
    SHARD_COUNT_KEY,
    Batch,
    ConflictError,
    FencedError,
    InstanceRow,
    Journal,
    NamespaceRow,
    NodeRow,
    ObjectRow,
    Predicate,
    RunRow,
    WorkerRow,
    check_shard_count,
    fence_violation,
    shard_count_mismatch,
)
from .migrations import SQLITE_MIGRATIONS
from .serial_thread import SerialThread

log = logging.getLogger("dw.journal")

T = TypeVar("T")

_RUN_COLS = (
    "run_id, namespace, workflow_id, run_number, workflow_type, task_queue, status, closed_reason, "
    "business_key, started_at, closed_at, wake_at, attention, last_seq, search_attributes, memo, detail"
)


# PRAGMA synchronous by name. SQLite takes any other word as NORMAL or OFF without complaint,
# and the value is spliced into the PRAGMA, so nothing else may reach it.
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


class SqliteJournal:
    def __init__(self, path: str, *, synchronous: str = "FULL", max_batch: int = 512) -> None:
        level = synchronous.strip().upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, not {synchronous!r}")
        self.path = path
        self.synchronous = level
        self.max_batch = max_batch
        self._group = GroupCommit(max_batch)
        self.commit_stats = self._group.stats
        self._writer = SerialThread("dw-sqlite-writer")  # every write, in order, on the write connection
        self._reader = SerialThread("dw-sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self.commits = 0
        self.batches = 0

    # --- lifecycle -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        for attempt in range(50):
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:  # another opener holds the lock while switching modes
                if attempt == 49:
                    raise
                time.sleep(0.05)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def open_sync(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self._wconn = self._connect()
        self._migrate(self._wconn)
        self._rconn = self._connect()

    async def open(self) -> None:
        await self._writer.run(self.open_sync)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        # The version is read under the write lock, so two first opens cannot both migrate.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            for version, statements in SQLITE_MIGRATIONS:
                if version <= current:
                    continue
                for sql in statements:
                    conn.execute(sql)
                conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
                log.info("applied migration %s", version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def run_writer(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The group-commit loop; lives in the node's root nursery."""
        async def commit(group: list[Pending]) -> None:
            await self._writer.run(self._commit_group, group)

        await self._group.run(commit, task_status=task_status)

    async def aclose(self) -> None:
        def close() -> None:
            for conn in (self._wconn, self._rconn):
                if conn is not None:
                    conn.close()

        with trio.CancelScope(shield=True):
            await self._reader.run(lambda: None)  # reads given before the close are done
            await self._writer.run(close)
        self._writer.stop()
        self._reader.stop()

    # --- writes --------------------------------------------------------------------

    async def append(self, batch: Batch) -> None:
        await self._group.append(batch)

    def _commit_group(self, group: list[Pending]) -> None:
        conn = self._wconn
        assert conn is not None
        fenced: dict[int, FencedError] = {}  # index in group -> error, applied only if the group commits
        try:
            conn.execute("BEGIN IMMEDIATE")
            for index, pending in enumerate(group):
                error = self._check_fence(conn, pending.batch)
                if error is not None:
                    fenced[index] = error
                    continue
                self._write(conn, pending.batch)
            conn.execute("COMMIT")
            for index, pending in enumerate(group):
                pending.error = fenced.get(index)
            if len(fenced) < len(group):
                self.commits += 1
                self.batches += len(group) - len(fenced)
            return
        except Exception as exc:  # noqa: BLE001 - reported to the appenders
            conn.execute("ROLLBACK")
            if len(group) == 1:
                group[0].error = ConflictError(str(exc)) if isinstance(exc, sqlite3.IntegrityError) else exc
                return
        # One bad batch must not fail its neighbours: retry each on its own.
        for pending in group:
            try:
                conn.execute("BEGIN IMMEDIATE")
                pending.error = self._check_fence(conn, pending.batch)
                if pending.error is None:
                    self._write(conn, pending.batch)
                conn.execute("COMMIT")
                if pending.error is None:
                    self.commits += 1
                    self.batches += 1
            except Exception as exc:  # noqa: BLE001 - reported to the appender
                conn.execute("ROLLBACK")
                pending.error = ConflictError(str(exc)) if isinstance(exc, sqlite3.IntegrityError) else exc

    @staticmethod
    def _check_fence(conn: sqlite3.Connection, batch: Batch) -> FencedError | None:
        """Inside the write transaction: the batch's fence against ``shards``."""
        if not batch.fence:
            return None
        shards = sorted(batch.fence)
        rows = conn.execute(
            f"SELECT shard_id, epoch FROM shards WHERE shard_id IN ({','.join('?' * len(shards))})", shards
        ).fetchall()
        return fence_violation(batch.fence, {shard: epoch for shard, epoch in rows})

    @staticmethod
    def _write(conn: sqlite3.Connection, batch: Batch) -> None:
        if batch.records:
            conn.executemany("INSERT INTO records(run_id, jseq, body) VALUES (?, ?, ?)", batch.records)
        for r in batch.runs:
            conn.execute(
                f"INSERT OR REPLACE INTO runs({_RUN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    r.run_id, r.namespace, r.workflow_id, r.run_number, r.workflow_type, r.task_queue, r.status,
                    r.closed_reason, r.business_key, r.started_at, r.closed_at, r.wake_at, int(r.attention),
                    r.last_seq, json.dumps(r.search_attributes), json.dumps(r.memo), json.dumps(r.detail),
                ),
            )
        for i in batch.instances:
            conn.execute(
                # An upsert on the row's own key only: OR REPLACE would also delete another
                # namespace's row holding the same (globally unique) workflow id.
                "INSERT INTO instances(namespace, workflow_id, workflow_type, current_run_id, run_count, created_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(namespace, workflow_id) DO UPDATE SET workflow_type=excluded.workflow_type,"
                " current_run_id=excluded.current_run_id, run_count=excluded.run_count, created_at=excluded.created_at",
                (i.namespace, i.workflow_id, i.workflow_type, i.current_run_id, i.run_count, i.created_at),
            )
        for n in batch.namespaces:
            conn.execute(
                "INSERT OR REPLACE INTO namespaces(name, description, retention_days, status, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?)",
                (n.name, n.description, n.retention_days, n.status, n.created_at, n.updated_at),
            )
        for o in batch.objects:
            conn.execute(
                "INSERT OR REPLACE INTO objects(namespace, kind, name, body, updated_at) VALUES (?,?,?,?,?)",
                (o.namespace, o.kind, o.name, json.dumps(o.body), o.updated_at),
            )
        for w in batch.workers:
            if w.deleted:
                conn.execute("DELETE FROM workers WHERE namespace=? AND worker_id=?", (w.namespace, w.worker_id))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO workers(namespace, worker_id, task_queue, runtime, registered_at, last_seen, info)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (w.namespace, w.worker_id, w.task_queue, w.runtime, w.registered_at, w.last_seen, json.dumps(w.info)),
                )

    # --- cluster ---------------------------------------------------------------------

    async def _write_txn(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(conn)`` in its own ``BEGIN IMMEDIATE`` transaction on the writer
        connection, between group commits (same limiter as the writer)."""

        def run() -> T:
            conn = self._wconn
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

        return await self._writer.run(run)  # shielded: the thread runs to the end anyway

    async def clear_owner_marks(self, node_id: str, keep: list[int]) -> int:
        """Forget ``node_id`` as owner of every shard but ``keep`` (marks a lost session left)."""

        def work(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(keep)) or "NULL"
            sql = f"UPDATE shards SET owner_node = NULL WHERE owner_node = ? AND shard_id NOT IN ({marks})"
            return conn.execute(sql, (node_id, *keep)).rowcount

        return await self._write_txn(work)

    async def claim_once(self, items: list[tuple[bytes, float]], purge_before: float | None) -> list[bool]:
        """Record each key until its expiry; True for the keys no one recorded before (first use)."""

        def work(conn: sqlite3.Connection) -> list[bool]:
            if purge_before is not None:
                conn.execute("DELETE FROM seen_signatures WHERE expires_at < ?", (purge_before,))
            return [
                conn.execute("INSERT OR IGNORE INTO seen_signatures(key, expires_at) VALUES (?, ?)", item).rowcount == 1
                for item in items
            ]

        return await self._write_txn(work)

    async def ensure_cluster(self, shard_count: int) -> int:
        check_shard_count(shard_count)

        def work(conn: sqlite3.Connection) -> int:
            # BEGIN IMMEDIATE holds the write lock before the read: first callers cannot race.
            row = conn.execute("SELECT value FROM cluster_settings WHERE key=?", (SHARD_COUNT_KEY,)).fetchone()
            if row is not None:
                return int(row[0])
            conn.execute("INSERT INTO cluster_settings(key, value) VALUES (?, ?)", (SHARD_COUNT_KEY, str(shard_count)))
            conn.executemany(
                "INSERT OR IGNORE INTO shards(shard_id, owner_node, epoch, updated_at) VALUES (?, NULL, 0, NULL)",
                [(i,) for i in range(shard_count)],
            )
            return shard_count

        stored = await self._write_txn(work)
        if stored != shard_count:
            raise shard_count_mismatch(stored, shard_count)
        return stored

    # --- retention and namespace deletion --------------------------------------------

    async def expired_runs(self, namespace: str, cutoff: float, limit: int) -> list[str]:
        rows = await self._read(
            "SELECT run_id FROM runs WHERE namespace=? AND closed_at IS NOT NULL AND closed_at < ?"
            " ORDER BY closed_at, run_id LIMIT ?",
            (namespace, cutoff, limit),
        )
        return [r[0] for r in rows]

    async def purge_runs(self, namespace: str, run_ids: list[str]) -> dict[str, int]:
        """Delete closed runs, their journals and (when it pointed at one of them) the instance."""

        def work(conn: sqlite3.Connection) -> dict[str, int]:
            events = runs = 0
            for run_id in run_ids:
                row = conn.execute("SELECT closed_at FROM runs WHERE run_id=? AND namespace=?", (run_id, namespace)).fetchone()
                if row is None or row[0] is None:
                    continue
                events += conn.execute("DELETE FROM records WHERE run_id=?", (run_id,)).rowcount
                runs += conn.execute("DELETE FROM runs WHERE run_id=?", (run_id,)).rowcount
                conn.execute("DELETE FROM instances WHERE namespace=? AND current_run_id=?", (namespace, run_id))
            return {"runs": runs, "history_events": events}

        return await self._write_txn(work)

    async def delete_namespace(self, namespace: str) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            like = namespace.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conn.execute("DELETE FROM records WHERE run_id IN (SELECT run_id FROM runs WHERE namespace=?)", (namespace,))
            conn.execute("DELETE FROM records WHERE run_id LIKE ? ESCAPE '\\'", (f"schedule:{like}:%",))
            out = {
                "workflow_runs": conn.execute("DELETE FROM runs WHERE namespace=?", (namespace,)).rowcount,
                "workflow_schedules": conn.execute("DELETE FROM objects WHERE namespace=? AND kind='schedule'", (namespace,)).rowcount,
                "search_attribute_definitions": conn.execute(
                    "DELETE FROM objects WHERE namespace=? AND kind='search_attribute'", (namespace,)
                ).rowcount,
                "workflow_worker_registrations": conn.execute("DELETE FROM workers WHERE namespace=?", (namespace,)).rowcount,
            }
            conn.execute("DELETE FROM instances WHERE namespace=?", (namespace,))
            conn.execute("DELETE FROM objects WHERE namespace=?", (namespace,))
            conn.execute("DELETE FROM namespaces WHERE name=?", (namespace,))
            return out

        return await self._write_txn(work)

    async def shard_epochs(self) -> dict[int, tuple[str | None, int]]:
        rows = await self._read("SELECT shard_id, owner_node, epoch FROM shards ORDER BY shard_id")
        return {r[0]: (r[1], r[2]) for r in rows}

    async def upsert_node(
        self, node_id: str, advertise_url: str | None, started_at: float | None, heartbeat_at: float | None,
        status: str,
    ) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO nodes(node_id, advertise_url, started_at, heartbeat_at, status)"
                " VALUES (?,?,?,?,?)",
                (node_id, advertise_url, started_at, heartbeat_at, status),
            )

        await self._write_txn(work)

    async def list_nodes(self) -> list[NodeRow]:
        rows = await self._read(
            "SELECT node_id, advertise_url, started_at, heartbeat_at, status FROM nodes ORDER BY node_id"
        )
        return [NodeRow(*r) for r in rows]

    # --- reads ---------------------------------------------------------------------

    async def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            assert self._rconn is not None
            return self._rconn.execute(sql, args).fetchall()

        return await self._reader.run(run)

    async def ping(self) -> bool:
        try:
            await self._read("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - health reports, never raises
            return False

    async def read_records(self, run_id: str) -> list[bytes]:
        rows = await self._read("SELECT body FROM records WHERE run_id=? ORDER BY jseq", (run_id,))
        return [r[0] for r in rows]

    @staticmethod
    def _run(row: tuple[Any, ...]) -> RunRow:
        return RunRow(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10], row[11],
            bool(row[12]), row[13], json.loads(row[14] or "{}"), json.loads(row[15] or "{}"), json.loads(row[16] or "{}"),
        )

    async def get_run(self, run_id: str) -> RunRow | None:
        rows = await self._read(f"SELECT {_RUN_COLS} FROM runs WHERE run_id=?", (run_id,))
        return self._run(rows[0]) if rows else None

    async def get_instance(self, namespace: str, workflow_id: str) -> InstanceRow | None:
        rows = await self._read(
            "SELECT namespace, workflow_id, workflow_type, current_run_id, run_count, created_at FROM instances"
            " WHERE namespace=? AND workflow_id=?",
            (namespace, workflow_id),
        )
        return InstanceRow(*rows[0]) if rows else None

    async def find_instances(self, workflow_id: str) -> list[InstanceRow]:
        """Every namespace's instance of this id: one read answers both start checks."""
        rows = await self._read(
            "SELECT namespace, workflow_id, workflow_type, current_run_id, run_count, created_at FROM instances"
            " WHERE workflow_id=?",
            (workflow_id,),
        )
        return [InstanceRow(*r) for r in rows]

    async def list_instance_runs(self, namespace: str, workflow_id: str) -> list[RunRow]:
        rows = await self._read(
            f"SELECT {_RUN_COLS} FROM runs WHERE namespace=? AND workflow_id=? ORDER BY run_number", (namespace, workflow_id)
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
        where = ["namespace=?"]
        args: list[object] = [namespace]
        if workflow_type:
            where.append("workflow_type=?")
            args.append(workflow_type)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if query:
            where.append("(workflow_id LIKE ? ESCAPE '\\' OR business_key LIKE ? ESCAPE '\\')")
            like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args.extend([like, like])
        for pred in predicates:
            clause, values = _sqlite_predicate(pred)
            where.append(clause)
            args.extend(values)
        if after is not None:  # keyset: strictly after the last row of the previous page
            where.append("(started_at < ? OR (started_at = ? AND run_id < ?))")
            args.extend([after[0], after[0], after[1]])
        sql = (
            f"SELECT {_RUN_COLS} FROM runs WHERE {' AND '.join(where)}"
            " ORDER BY started_at DESC, run_id DESC LIMIT ? OFFSET ?"
        )
        rows = await self._read(sql, (*args, limit, offset))
        return [self._run(r) for r in rows]

    async def runs_to_recover(self) -> list[RunRow]:
        rows = await self._read(
            f"SELECT {_RUN_COLS} FROM runs WHERE (status NOT IN ('completed','failed','cancelled','terminated')"
            " AND (attention=1 OR wake_at IS NOT NULL))"
            " OR (status IN ('completed','failed','cancelled','terminated') AND attention=1)"  # parent-close policies owed
        )
        return [self._run(r) for r in rows]

    async def list_namespaces(self) -> list[NamespaceRow]:
        rows = await self._read(
            "SELECT name, description, retention_days, status, created_at, updated_at FROM namespaces ORDER BY name"
        )
        return [NamespaceRow(*r) for r in rows]

    async def list_objects(self, kind: str, namespace: str | None = None) -> list[ObjectRow]:
        args: tuple[str, ...]
        if namespace is None:
            sql, args = "SELECT namespace, kind, name, body, updated_at FROM objects WHERE kind=? ORDER BY namespace, name", (kind,)
        else:
            sql, args = (
                "SELECT namespace, kind, name, body, updated_at FROM objects WHERE kind=? AND namespace=? ORDER BY name",
                (kind, namespace),
            )
        rows = await self._read(sql, args)
        return [ObjectRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def list_workers(self) -> list[WorkerRow]:
        rows = await self._read(
            "SELECT namespace, worker_id, task_queue, runtime, registered_at, last_seen, info FROM workers"
        )
        return [WorkerRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "{}")) for r in rows]


_SQL_OPS = {"=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


def _sqlite_predicate(pred: Predicate) -> tuple[str, list[object]]:
    if pred.column is not None:
        if pred.op in ("in", "not_in"):
            values = pred.value_list()
            marks = ",".join("?" * len(values))
            return f"{pred.column} {'NOT IN' if pred.op == 'not_in' else 'IN'} ({marks})", list(values)
        if pred.op == "!=":
            return f"({pred.column} IS NULL OR {pred.column} != ?)", [pred.value]
        return f"{pred.column} {_SQL_OPS[pred.op]} ?", [pred.value]
    path = '$."' + str(pred.attribute).replace('"', '""') + '"'
    if pred.type == "keyword_list":
        contains = "EXISTS (SELECT 1 FROM json_each(search_attributes, ?) WHERE value = ?)"
        return (f"NOT {contains}" if pred.op == "!=" else contains), [path, pred.value]
    value = int(pred.value) if isinstance(pred.value, bool) else pred.value
    if pred.op == "!=":
        return "(json_extract(search_attributes, ?) IS NULL OR json_extract(search_attributes, ?) != ?)", [path, path, value]
    if pred.type in ("int", "double") and pred.op != "=":
        # only numbers are ordered against a number (SQLite would rank any text above it)
        number = "json_type(search_attributes, ?) IN ('integer', 'real') AND json_extract(search_attributes, ?)"
        return f"{number} {_SQL_OPS[pred.op]} ?", [path, path, value]
    return f"json_extract(search_attributes, ?) {_SQL_OPS[pred.op]} ?", [path, value]


# Checked by mypy: the embedded journal is a complete ``Journal`` (a missing method or a
# signature that drifted from the protocol fails the type check).
_JOURNAL: type[Journal] = SqliteJournal
