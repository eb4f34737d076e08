"""The journal contract: what every storage backend must do, written against the interface.

Every test takes the ``journal`` fixture, which is parametrized over ``BACKENDS``: the
embedded SQLite journal and the PostgreSQL journal. A backend is one ``Backend`` entry
(how to make a fresh, empty store and remove it afterwards, and how to open a journal on
it). The tests only use the ``persistence.journal`` interface plus two things every
group-commit backend provides: a ``run_writer`` task and the ``commits``/``batches``
counters.

Every test runs inside ``trio_asyncio.open_loop()`` (the ``aio_loop`` fixture), as the node
does. The PostgreSQL cases run when ``DW_TEST_DATABASE_URL`` names a database (CI sets it to
postgresql://postgres@127.0.0.1:5432/dw_test); each test gets a fresh schema ``t_<uuid>``,
dropped afterwards. Without the variable they are skipped, except in CI, where they fail: the
rule is ``tests.postgres_required.postgres_url``, the same for every PostgreSQL case.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import trio
import trio_asyncio

# isort: split
import asyncpg

from persistence.journal import (
    Batch,
    ConflictError,
    FencedError,
    InstanceRow,
    NamespaceRow,
    NodeRow,
    ObjectRow,
    Predicate,
    RunRow,
    WorkerRow,
)
from persistence.postgres_journal import PostgresJournal
from persistence.sqlite_journal import SqliteJournal
from tests.postgres_required import postgres_url

T0 = 1_800_000_000.0
NS = "contract"
TERMINAL = ("completed", "failed", "cancelled", "terminated")


# --- backends --------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    # A fresh, empty store for one test (a file, a database schema...), removed afterwards:
    # an async context manager whose value is the store's location (a path, a DSN...).
    fresh_store: Callable[[Path], AbstractAsyncContextManager[str]]
    # Open a journal on a location: connect and apply migrations, writer not started.
    open: Callable[[str], Awaitable[Any]]
    # Schema versions recorded as applied, one entry per application (None: not checked).
    applied_versions: Callable[[str], Awaitable[list[int]]] | None = None
    # Set a shard's epoch behind the journal's back, as another node's claim would.
    set_epoch: Callable[[str, int, int], Awaitable[None]] | None = None
    # Check the backend can run here: returns, or skips/fails the test (see tests.postgres_required).
    require: Callable[[], object] = lambda: None
    # Stop a journal's next write transaction after each write to one of PAUSED_TABLES, before
    # it commits, and run ``check(table)`` there: an async context manager (see _sqlite_pauses).
    pauses: Callable[[Any, str, Callable[[str], Awaitable[None]]], AbstractAsyncContextManager[None]] | None = None


@asynccontextmanager
async def _sqlite_store(tmp_path: Path) -> AsyncIterator[str]:
    yield str(tmp_path / "journal.sqlite3")


async def _open_sqlite(location: str) -> SqliteJournal:
    journal = SqliteJournal(location)
    await journal.open()
    return journal


async def _sqlite_versions(location: str) -> list[int]:
    with sqlite3.connect(location) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]


async def _sqlite_set_epoch(location: str, shard: int, epoch: int) -> None:
    conn = sqlite3.connect(location, timeout=10)
    try:
        with conn:
            conn.execute("UPDATE shards SET epoch=? WHERE shard_id=?", (epoch, shard))
    finally:
        conn.close()


# Tables an append writes; a test can stop the write transaction after each (Backend.pauses).
PAUSED_TABLES = ("records", "runs", "instances", "namespaces", "workers")


@asynccontextmanager
async def _sqlite_pauses(journal: Any, location: str, check: Callable[[str], Awaitable[None]]) -> AsyncIterator[None]:
    """Temporary triggers on the journal's writer connection call back into the test, from the
    writer thread, inside the open transaction; the test's reads run meanwhile in trio."""
    paused: set[str] = set()
    token = trio.lowlevel.current_trio_token()  # the writer is the journal's own thread, not one of trio's

    def pause(table: str) -> int:
        if table not in paused:  # the first row written to each table
            paused.add(table)
            trio.from_thread.run(check, table, trio_token=token)
        return 0

    conn = journal._wconn  # the writer's own connection: only its transactions run TEMP triggers
    conn.create_function("dw_test_pause", 1, pause)
    for table in PAUSED_TABLES:
        conn.execute(
            f"CREATE TEMP TRIGGER dw_test_pause_{table} AFTER INSERT ON main.{table}"
            f" BEGIN SELECT dw_test_pause('{table}'); END"
        )
    try:
        yield
    finally:
        for table in PAUSED_TABLES:
            conn.execute(f"DROP TRIGGER IF EXISTS temp.dw_test_pause_{table}")


SQLITE = Backend(
    name="sqlite",
    fresh_store=_sqlite_store,
    open=_open_sqlite,
    applied_versions=_sqlite_versions,
    set_epoch=_sqlite_set_epoch,
    pauses=_sqlite_pauses,
)


def _with_search_path(dsn: str, schema: str) -> str:
    """The DSN with ``search_path`` set; asyncpg sends unknown DSN parameters as server settings."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"] + [("search_path", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _pg_fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """asyncio: one statement on a connection of its own (never the journal's pool)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


@asynccontextmanager
async def _postgres_store(tmp_path: Path) -> AsyncIterator[str]:
    url = postgres_url()
    schema = f"t_{uuid.uuid4().hex}"
    await trio_asyncio.aio_as_trio(_pg_fetch)(url, f"CREATE SCHEMA {schema}")
    try:
        yield _with_search_path(url, schema)
    finally:
        with trio.CancelScope(shield=True):
            await trio_asyncio.aio_as_trio(_pg_fetch)(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _open_postgres(location: str) -> PostgresJournal:
    journal = PostgresJournal(location)
    await journal.open()
    return journal


async def _postgres_versions(location: str) -> list[int]:
    rows = await trio_asyncio.aio_as_trio(_pg_fetch)(location, "SELECT version FROM schema_version ORDER BY version")
    return [r[0] for r in rows]


async def _postgres_set_epoch(location: str, shard: int, epoch: int) -> None:
    await trio_asyncio.aio_as_trio(_pg_fetch)(
        location, "UPDATE shards SET epoch = $1 WHERE shard_id = $2", epoch, shard
    )


@asynccontextmanager
async def _postgres_pauses(journal: Any, location: str, check: Callable[[str], Awaitable[None]]) -> AsyncIterator[None]:
    """Row triggers make the writer's transaction take an advisory lock per table written (row
    triggers: a statement that writes no row of a table must not stop there), which a
    connection of the test holds: the writer waits there, uncommitted, until the test has seen
    it waiting (pg_locks), run ``check`` and released that table's lock."""
    key = random.randint(1, 2**31 - 1)
    aio = trio_asyncio.aio_as_trio
    await aio(_pg_fetch)(
        location,
        "CREATE FUNCTION dw_test_pause() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$ BEGIN PERFORM pg_advisory_xact_lock({key}, TG_ARGV[0]::int); RETURN NULL; END $$",
    )
    for i, table in enumerate(PAUSED_TABLES):
        await aio(_pg_fetch)(
            location,
            f"CREATE TRIGGER dw_test_pause AFTER INSERT OR UPDATE ON {table} FOR EACH ROW"
            f" EXECUTE FUNCTION dw_test_pause('{i}')",
        )
    holder = await aio(asyncpg.connect)(location)
    held = set(range(len(PAUSED_TABLES)))
    for i in held:
        await aio(holder.execute)(f"SELECT pg_advisory_lock({key}, {i})")

    async def waited_on() -> int | None:
        rows = await aio(_pg_fetch)(
            location,
            "SELECT objid::int8 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2"
            " AND classid = $1::int8::oid",
            key,
        )
        return int(rows[0][0]) if rows else None

    async def drive() -> None:
        while held:
            table = await waited_on()
            if table is None or table not in held:
                await trio.sleep(0.01)  # polling pg_locks for the writer's arrival
                continue
            await check(PAUSED_TABLES[table])
            await aio(holder.execute)(f"SELECT pg_advisory_unlock({key}, {table})")
            held.discard(table)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive)
            yield
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await aio(holder.close)()
            for table in PAUSED_TABLES:
                await aio(_pg_fetch)(location, f"DROP TRIGGER IF EXISTS dw_test_pause ON {table}")


POSTGRES = Backend(
    name="postgresql",
    fresh_store=_postgres_store,
    open=_open_postgres,
    applied_versions=_postgres_versions,
    set_epoch=_postgres_set_epoch,
    require=postgres_url,
    pauses=_postgres_pauses,
)


BACKENDS = [pytest.param(b, id=b.name) for b in (SQLITE, POSTGRES)]


class Harness:
    """Opens journals on one location with their writer running in the test's nursery."""

    def __init__(self, backend: Backend, location: str, nursery: trio.Nursery) -> None:
        self.backend = backend
        self.location = location
        self.nursery = nursery
        self._open: list[tuple[Any, trio.CancelScope]] = []

    async def open(self) -> Any:
        journal = await self.backend.open(self.location)
        scope = trio.CancelScope()

        async def writer(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await journal.run_writer(task_status=task_status)

        await self.nursery.start(writer)
        self._open.append((journal, scope))
        return journal

    async def close(self, journal: Any) -> None:
        for entry in list(self._open):
            if entry[0] is journal:
                self._open.remove(entry)
                entry[1].cancel()
                await journal.aclose()

    async def close_all(self) -> None:
        for journal, _ in list(self._open):
            await self.close(journal)


@pytest.fixture
async def aio_loop() -> AsyncIterator[trio_asyncio.TrioEventLoop]:
    """The asyncio loop asyncpg runs on; it outlives every journal of the test."""
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, aio_loop: trio_asyncio.TrioEventLoop) -> Backend:
    # An unavailable backend is skipped here, or failed in CI (tests.postgres_required); this
    # fixture is async so a failure lands in the test's call phase: a FAIL, not an ERROR.
    chosen: Backend = request.param
    chosen.require()
    return chosen


@pytest.fixture
async def harness(backend: Backend, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Harness]:
    async with backend.fresh_store(tmp_path) as location:
        h = Harness(backend, location, nursery)
        try:
            yield h
        finally:
            await h.close_all()


@pytest.fixture
async def journal(harness: Harness) -> Any:
    """An opened journal on a fresh store, its writer running in the pytest-trio nursery."""
    return await harness.open()


# --- row builders ----------------------------------------------------------------------


def run_row(run_id: str, **kw: Any) -> RunRow:
    fields: dict[str, Any] = dict(
        run_id=run_id,
        namespace=NS,
        workflow_id=f"wf-{run_id}",
        run_number=1,
        workflow_type="Order",
        task_queue="q",
        status="running",
        closed_reason=None,
        business_key=None,
        started_at=T0,
        closed_at=None,
        wake_at=None,
        attention=False,
        last_seq=0,
        search_attributes={},
        memo={},
    )
    fields.update(kw)
    return RunRow(**fields)


def instance_row(workflow_id: str, current_run_id: str, **kw: Any) -> InstanceRow:
    fields: dict[str, Any] = dict(
        namespace=NS, workflow_id=workflow_id, workflow_type="Order", current_run_id=current_run_id, run_count=1,
        created_at=T0,
    )
    fields.update(kw)
    return InstanceRow(**fields)


def namespace_row(name: str, **kw: Any) -> NamespaceRow:
    fields: dict[str, Any] = dict(
        name=name, description=f"{name} namespace", retention_days=7, status="active", created_at=T0, updated_at=T0
    )
    fields.update(kw)
    return NamespaceRow(**fields)


def worker_row(worker_id: str, **kw: Any) -> WorkerRow:
    fields: dict[str, Any] = dict(
        namespace=NS, worker_id=worker_id, task_queue="q", runtime="python", registered_at=T0, last_seen=T0,
        info={"sdk_version": "2.12.0", "supported_workflow_types": ["Order"]},
    )
    fields.update(kw)
    return WorkerRow(**fields)


def body(run_id: str, jseq: int) -> bytes:
    return f"{run_id}#{jseq}".encode() + b"\x00\xff"


async def list_runs(journal: Any, namespace: str = NS, **kw: Any) -> list[RunRow]:
    args: dict[str, Any] = dict(workflow_type=None, statuses=None, query=None, offset=0, limit=100)
    args.update(kw)
    return await journal.list_runs(namespace, **args)


async def run_ids(journal: Any, namespace: str = NS, **kw: Any) -> list[str]:
    return [r.run_id for r in await list_runs(journal, namespace, **kw)]


# --- records ---------------------------------------------------------------------------


async def test_ping(journal: Any) -> None:
    assert await journal.ping() is True


async def test_read_records_of_unknown_run_is_empty(journal: Any) -> None:
    assert await journal.read_records("nope") == []
    assert await journal.get_run("nope") is None
    assert await journal.get_instance(NS, "nope") is None
    assert await journal.list_instance_runs(NS, "nope") == []


async def test_append_then_read_records_in_jseq_order_for_that_run_only(journal: Any) -> None:
    # Appended out of order and interleaved with another run, across several batches.
    await journal.append(Batch(records=[("a", 2, body("a", 2)), ("b", 0, body("b", 0)), ("a", 0, body("a", 0))]))
    await journal.append(Batch(records=[("a", 10, body("a", 10)), ("b", 1, body("b", 1))]))
    await journal.append(Batch(records=[("a", 1, body("a", 1)), ("ab", 0, body("ab", 0))]))

    assert await journal.read_records("a") == [body("a", 0), body("a", 1), body("a", 2), body("a", 10)]
    assert await journal.read_records("b") == [body("b", 0), body("b", 1)]
    assert await journal.read_records("ab") == [body("ab", 0)]


async def test_record_bodies_are_bytes_round_tripped_exactly(journal: Any) -> None:
    blobs = [b"", bytes(range(256)), b"\x00" * 1000, "ünïcødé".encode()]
    await journal.append(Batch(records=[("bin", i, blob) for i, blob in enumerate(blobs)]))
    got = await journal.read_records("bin")
    assert got == blobs
    assert all(isinstance(b, bytes) for b in got)


# --- atomic batches --------------------------------------------------------------------


async def test_batch_with_two_runs_and_all_row_kinds_is_visible_atomically(harness: Harness, journal: Any) -> None:
    n = 50
    run_a = run_row("run-a", workflow_id="wf-1", run_number=1, status="completed", closed_reason="continued",
                    closed_at=T0 + 5, last_seq=n, search_attributes={"tier": "gold"}, memo={"note": "first"})
    run_b = run_row("run-b", workflow_id="wf-1", run_number=2, started_at=T0 + 5, last_seq=n, attention=True,
                    business_key="bk-1")
    inst = instance_row("wf-1", "run-b", run_count=2)
    ns = namespace_row("atomic-ns")
    worker = worker_row("atomic-worker")
    batch = Batch(
        records=[("run-a", i, body("run-a", i)) for i in range(n)] + [("run-b", i, body("run-b", i)) for i in range(n)],
        runs=[run_a, run_b],
        instances=[inst],
        namespaces=[ns],
        workers=[worker],
    )

    async def visible() -> dict[str, object]:
        return {
            "records of run-a": len(await journal.read_records("run-a")),
            "records of run-b": len(await journal.read_records("run-b")),
            "run-a": await journal.get_run("run-a"),
            "run-b": await journal.get_run("run-b"),
            "instance": await journal.get_instance(NS, "wf-1"),
            "namespace": [x for x in await journal.list_namespaces() if x.name == "atomic-ns"],
            "worker": [w for w in await journal.list_workers() if w.worker_id == "atomic-worker"],
        }

    nothing = await visible()
    assert nothing == {"records of run-a": 0, "records of run-b": 0, "run-a": None, "run-b": None,
                       "instance": None, "namespace": [], "worker": []}

    # The write transaction is stopped after each table it writes, before its commit, and a
    # reader looks: it must see nothing of the batch at every stop. A batch split over several
    # transactions shows its earlier part at a later stop. No race: the stops are certain.
    seen: dict[str, dict[str, object]] = {}

    async def check(table: str) -> None:
        seen[table] = await visible()

    assert harness.backend.pauses is not None
    async with harness.backend.pauses(journal, harness.location, check):
        with trio.fail_after(60):
            await journal.append(batch)

    assert sorted(seen) == sorted(PAUSED_TABLES), f"the write never reached {set(PAUSED_TABLES) - set(seen)}"
    partial = {table: view for table, view in seen.items() if view != nothing}
    assert not partial, f"part of the batch visible before its commit: {partial}"

    assert await journal.read_records("run-a") == [body("run-a", i) for i in range(n)]
    assert await journal.read_records("run-b") == [body("run-b", i) for i in range(n)]
    assert await journal.get_run("run-a") == run_a
    assert await journal.get_run("run-b") == run_b
    assert await journal.get_instance(NS, "wf-1") == inst
    assert await journal.list_instance_runs(NS, "wf-1") == [run_a, run_b]
    assert ns in await journal.list_namespaces()
    assert worker in await journal.list_workers()


async def test_run_row_upsert_replaces(journal: Any) -> None:
    first = run_row("up", status="running", wake_at=T0 + 60, attention=True, last_seq=3,
                    search_attributes={"a": 1}, memo={"m": "x"})
    await journal.append(Batch(runs=[first]))
    assert await journal.get_run("up") == first

    second = replace(first, status="completed", closed_reason="completed", closed_at=T0 + 9, wake_at=None,
                     attention=False, last_seq=7, search_attributes={"b": 2}, memo={})
    await journal.append(Batch(runs=[second]))
    assert await journal.get_run("up") == second
    assert await list_runs(journal) == [second]
    assert await journal.list_instance_runs(NS, first.workflow_id) == [second]


async def test_instance_namespace_and_worker_rows_upsert(journal: Any) -> None:
    await journal.append(Batch(
        instances=[instance_row("wf-u", "r1")], namespaces=[namespace_row("nsu")], workers=[worker_row("wu")]
    ))
    inst2 = instance_row("wf-u", "r2", run_count=2)
    ns2 = namespace_row("nsu", description="changed", retention_days=90, updated_at=T0 + 1)
    w2 = worker_row("wu", last_seen=T0 + 30, info={"task_slots": {"workflow": 3}})
    await journal.append(Batch(instances=[inst2], namespaces=[ns2], workers=[w2]))

    assert await journal.get_instance(NS, "wf-u") == inst2
    assert [n for n in await journal.list_namespaces() if n.name == "nsu"] == [ns2]
    assert [w for w in await journal.list_workers() if w.worker_id == "wu"] == [w2]


async def test_rows_are_keyed_by_namespace(journal: Any) -> None:
    await journal.append(Batch(
        instances=[instance_row("mine", "r-one"), instance_row("theirs", "r-two", namespace="other")],
        workers=[worker_row("same-w"), worker_row("same-w", namespace="other", task_queue="q2")],
    ))
    assert (await journal.get_instance(NS, "mine")).current_run_id == "r-one"
    assert await journal.get_instance("other", "mine") is None
    assert (await journal.get_instance("other", "theirs")).current_run_id == "r-two"
    workers = {(w.namespace, w.worker_id): w.task_queue for w in await journal.list_workers()}
    assert workers == {(NS, "same-w"): "q", ("other", "same-w"): "q2"}


async def test_a_workflow_id_is_held_by_one_namespace_only(journal: Any) -> None:
    """Workflow ids are unique across namespaces (control plane 4.1): the store refuses a second
    namespace's instance of an id, with nothing of that batch written, and still takes the
    owning namespace's own updates of it (continue-as-new moves its current run)."""
    await journal.append(Batch(records=[("r-one", 1, body("r-one", 1))], instances=[instance_row("same", "r-one")]))
    with pytest.raises(ConflictError):
        await journal.append(Batch(
            records=[("r-two", 1, body("r-two", 1))], instances=[instance_row("same", "r-two", namespace="other")]
        ))
    assert await journal.get_instance("other", "same") is None
    assert await journal.read_records("r-two") == []
    assert (await journal.get_instance(NS, "same")).current_run_id == "r-one"
    await journal.append(Batch(instances=[instance_row("same", "r-three")]))
    assert (await journal.get_instance(NS, "same")).current_run_id == "r-three"


# --- conflicts -------------------------------------------------------------------------


async def test_append_at_used_position_raises_conflict_and_writes_nothing_of_the_batch(journal: Any) -> None:
    await journal.append(Batch(records=[("c", 0, body("c", 0)), ("c", 1, body("c", 1))], runs=[run_row("c")]))

    bad = Batch(
        records=[("fresh", 0, body("fresh", 0)), ("c", 2, b"new"), ("c", 1, b"duplicate")],
        runs=[run_row("fresh"), run_row("c", status="completed")],
        instances=[instance_row("wf-fresh", "fresh")],
        namespaces=[namespace_row("ns-of-bad-batch")],
        workers=[worker_row("worker-of-bad-batch")],
    )
    with pytest.raises(ConflictError):
        await journal.append(bad)

    assert await journal.read_records("c") == [body("c", 0), body("c", 1)]
    assert await journal.read_records("fresh") == []
    assert await journal.get_run("fresh") is None
    assert (await journal.get_run("c")).status == "running"
    assert await journal.get_instance(NS, "wf-fresh") is None
    assert "ns-of-bad-batch" not in [n.name for n in await journal.list_namespaces()]
    assert "worker-of-bad-batch" not in [w.worker_id for w in await journal.list_workers()]

    # The journal keeps working after a conflict.
    await journal.append(Batch(records=[("c", 2, body("c", 2))]))
    assert await journal.read_records("c") == [body("c", 0), body("c", 1), body("c", 2)]


async def test_duplicate_position_inside_one_batch_conflicts(journal: Any) -> None:
    with pytest.raises(ConflictError):
        await journal.append(Batch(records=[("d", 0, b"one"), ("d", 0, b"two")], runs=[run_row("d")]))
    assert await journal.read_records("d") == []
    assert await journal.get_run("d") is None


# --- group commit ----------------------------------------------------------------------


async def test_group_commit_batches_two_hundred_concurrent_appenders(journal: Any) -> None:
    n = 200
    commits0, batches0 = journal.commits, journal.batches
    finished: list[int] = []

    async def appender(i: int) -> None:
        rid = f"gc-{i}"
        await journal.append(Batch(records=[(rid, 0, body(rid, 0)), (rid, 1, body(rid, 1))], runs=[run_row(rid)]))
        finished.append(i)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(appender, i)

    assert sorted(finished) == list(range(n))
    commits, batches = journal.commits - commits0, journal.batches - batches0
    assert batches == n
    assert 1 <= commits <= n // 10, f"{commits} commits for {n} batches: no group commit"
    for i in range(n):
        rid = f"gc-{i}"
        assert await journal.read_records(rid) == [body(rid, 0), body(rid, 1)]
    assert len(await list_runs(journal, limit=1000)) == n


async def test_conflicting_batch_in_a_concurrent_group_fails_alone(journal: Any) -> None:
    await journal.append(Batch(records=[("hot", 0, body("hot", 0))]))
    n, bad = 20, 7
    outcome: dict[int, BaseException | None] = {}

    async def appender(i: int) -> None:
        rid = f"grp-{i}"
        records = [(rid, 0, body(rid, 0))]
        if i == bad:
            records.append(("hot", 0, b"stolen"))
        try:
            await journal.append(Batch(records=records, runs=[run_row(rid)], workers=[worker_row(f"w-{i}")]))
            outcome[i] = None
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            outcome[i] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(appender, i)

    assert isinstance(outcome[bad], ConflictError), outcome[bad]
    assert {i for i, exc in outcome.items() if exc is not None} == {bad}
    assert await journal.read_records("hot") == [body("hot", 0)]
    workers = {w.worker_id for w in await journal.list_workers()}
    for i in range(n):
        rid = f"grp-{i}"
        if i == bad:
            assert await journal.read_records(rid) == []
            assert await journal.get_run(rid) is None
            assert f"w-{i}" not in workers
        else:
            assert await journal.read_records(rid) == [body(rid, 0)]
            assert await journal.get_run(rid) == run_row(rid)
            assert f"w-{i}" in workers


async def test_two_batches_racing_for_the_same_position_one_wins(journal: Any) -> None:
    outcome: dict[str, BaseException | None] = {}

    async def appender(name: str) -> None:
        try:
            await journal.append(Batch(records=[("race", 0, name.encode())], runs=[run_row("race", memo={"by": name})]))
            outcome[name] = None
        except ConflictError as exc:
            outcome[name] = exc

    async with trio.open_nursery() as nursery:
        for name in ("left", "right"):
            nursery.start_soon(appender, name)

    winners = [k for k, v in outcome.items() if v is None]
    assert len(winners) == 1 and len(outcome) == 2, outcome
    assert await journal.read_records("race") == [winners[0].encode()]
    assert (await journal.get_run("race")).memo == {"by": winners[0]}


# --- queries ---------------------------------------------------------------------------


LISTED = [
    # run_id, workflow_id, workflow_type, status, business_key, started_at offset
    ("l1", "order-1", "Order", "running", "cust_a", 1),
    ("l2", "order-2", "Order", "completed", None, 2),
    ("l3", "invoice-1", "Invoice", "running", "order%promo", 3),
    ("l4", "ship_1", "Ship", "failed", "x", 4),
    ("l5", "shipX1", "Ship", "running", None, 5),
    ("l6", "promo%10", "Promo", "cancelled", None, 6),
    ("l7", "dir-7", "Order", "terminated", "dir\\sub", 7),
    ("l8", "100_percent", "Order", "running", "plain", 8),
]


@pytest.fixture
async def listed(journal: Any) -> Any:
    rows = [
        run_row(rid, workflow_id=wid, workflow_type=wtype, status=status, business_key=bk, started_at=T0 + dt)
        for rid, wid, wtype, status, bk, dt in LISTED
    ]
    # Same ids and types in another namespace must never show up.
    rows += [replace(r, run_id=f"other-{r.run_id}", namespace="other", started_at=r.started_at + 100) for r in rows]
    await journal.append(Batch(runs=rows))
    return journal


async def test_list_runs_newest_first_within_namespace(listed: Any) -> None:
    assert await run_ids(listed) == ["l8", "l7", "l6", "l5", "l4", "l3", "l2", "l1"]
    assert await run_ids(listed, "other") == [f"other-l{i}" for i in range(8, 0, -1)]
    assert await run_ids(listed, "missing") == []


async def test_list_runs_offset_limit_paging(listed: Any) -> None:
    everything = await run_ids(listed)
    pages = [await run_ids(listed, offset=off, limit=3) for off in (0, 3, 6, 9)]
    assert pages == [everything[0:3], everything[3:6], everything[6:8], []]
    assert await run_ids(listed, offset=2, limit=1) == [everything[2]]


async def test_list_runs_filters_by_workflow_type(listed: Any) -> None:
    assert await run_ids(listed, workflow_type="Order") == ["l8", "l7", "l2", "l1"]
    assert await run_ids(listed, workflow_type="Ship") == ["l5", "l4"]
    assert await run_ids(listed, workflow_type="Nope") == []


async def test_list_runs_filters_by_statuses(listed: Any) -> None:
    assert await run_ids(listed, statuses=["running"]) == ["l8", "l5", "l3", "l1"]
    assert await run_ids(listed, statuses=["failed", "cancelled"]) == ["l6", "l4"]
    assert await run_ids(listed, statuses=["running"], workflow_type="Order") == ["l8", "l1"]


async def test_list_runs_query_matches_workflow_id_or_business_key_substring(listed: Any) -> None:
    assert await run_ids(listed, query="order") == ["l3", "l2", "l1"]  # l3 through its business key
    assert await run_ids(listed, query="cust") == ["l1"]
    assert await run_ids(listed, query="voice") == ["l3"]
    assert await run_ids(listed, query="nothing-like-this") == []
    assert await run_ids(listed, query="order", statuses=["running"], workflow_type="Order") == ["l1"]


async def test_list_runs_query_treats_like_metacharacters_literally(listed: Any) -> None:
    # As LIKE wildcards these would also match order-1, invoice-1 (o...1) and shipX1 (p?1).
    assert await run_ids(listed, query="o%1") == ["l6"]
    assert await run_ids(listed, query="p_1") == ["l4"]
    assert await run_ids(listed, query="%") == ["l6", "l3"]
    assert await run_ids(listed, query="_") == ["l8", "l4", "l1"]
    assert await run_ids(listed, query="\\") == ["l7"]
    assert await run_ids(listed, query="r\\s") == ["l7"]


async def test_runs_to_recover_open_runs_with_attention_or_wake_at_and_closed_ones_still_owing_work(journal: Any) -> None:
    """A closed run is recovered only while it needs attention (parent-close policies it has not
    recorded as applied); a due time alone never brings a closed run back."""
    rows = [
        run_row("open-attention", status="running", attention=True),
        run_row("open-wake", status="running", wake_at=T0 + 60),
        run_row("open-both", status="pending", attention=True, wake_at=T0 + 1),
        run_row("open-idle", status="running"),
    ]
    for status in TERMINAL:
        rows.append(run_row(f"{status}-attention", status=status, closed_at=T0 + 1, attention=True))
        rows.append(run_row(f"{status}-wake", status=status, closed_at=T0 + 1, wake_at=T0 + 60))
    rows.append(run_row("other-ns", namespace="elsewhere", attention=True))
    await journal.append(Batch(runs=rows))

    got = {r.run_id: r for r in await journal.runs_to_recover()}
    assert set(got) == {"open-attention", "open-wake", "open-both", "other-ns", *(f"{s}-attention" for s in TERMINAL)}
    assert got["open-wake"] == rows[1]

    # Closing a run with nothing owed takes it out.
    await journal.append(Batch(runs=[replace(rows[0], status="completed", closed_at=T0 + 2, attention=False)]))
    assert "open-attention" not in {r.run_id for r in await journal.runs_to_recover()}


# --- workers ---------------------------------------------------------------------------


async def test_worker_row_with_deleted_removes_it(journal: Any) -> None:
    await journal.append(Batch(workers=[worker_row("w1"), worker_row("w2")]))
    await journal.append(Batch(workers=[worker_row("w1", deleted=True)]))
    assert [w.worker_id for w in await journal.list_workers()] == ["w2"]
    # Deleting an unknown worker is harmless; re-registering brings it back.
    await journal.append(Batch(workers=[worker_row("ghost", deleted=True)]))
    await journal.append(Batch(workers=[worker_row("w1", last_seen=T0 + 5)]))
    assert {w.worker_id: w.last_seen for w in await journal.list_workers()} == {"w1": T0 + 5, "w2": T0}


# --- durability and migrations ---------------------------------------------------------


async def _write_everything(journal: Any) -> Batch:
    batch = Batch(
        records=[("dur", i, body("dur", i)) for i in range(5)],
        runs=[run_row("dur", workflow_id="wf-dur", wake_at=T0 + 10, search_attributes={"k": [1, 2]}, memo={"m": None})],
        instances=[instance_row("wf-dur", "dur")],
        namespaces=[namespace_row("durable-ns")],
        workers=[worker_row("durable-worker")],
    )
    await journal.append(batch)
    return batch


async def _assert_everything(journal: Any, batch: Batch) -> None:
    assert await journal.read_records("dur") == [b for _, _, b in batch.records]
    assert await journal.get_run("dur") == batch.runs[0]
    assert await journal.get_instance(NS, "wf-dur") == batch.instances[0]
    assert await journal.list_instance_runs(NS, "wf-dur") == batch.runs
    assert batch.namespaces[0] in await journal.list_namespaces()
    assert batch.workers[0] in await journal.list_workers()
    assert [r.run_id for r in await journal.runs_to_recover()] == ["dur"]


async def test_data_survives_close_and_reopen(harness: Harness, journal: Any) -> None:
    batch = await _write_everything(journal)
    await harness.close(journal)

    reopened = await harness.open()
    await _assert_everything(reopened, batch)
    # Positions already used stay used after a reopen.
    with pytest.raises(ConflictError):
        await reopened.append(Batch(records=[("dur", 4, b"again")]))
    await reopened.append(Batch(records=[("dur", 5, body("dur", 5))]))
    assert len(await reopened.read_records("dur")) == 6


async def test_migrations_are_idempotent(harness: Harness, backend: Backend, journal: Any) -> None:
    batch = await _write_everything(journal)
    versions = await backend.applied_versions(harness.location) if backend.applied_versions else None

    # A second open while the first is still open, then a third after closing both.
    second = await harness.open()
    await _assert_everything(second, batch)
    await harness.close(journal)
    await harness.close(second)
    third = await harness.open()
    await _assert_everything(third, batch)

    if backend.applied_versions is not None:
        assert versions and versions == sorted(set(versions)), versions
        assert await backend.applied_versions(harness.location) == versions, "a migration was applied twice"


async def test_concurrent_first_opens_of_a_fresh_store(backend: Backend, tmp_path: Path) -> None:
    """Two processes starting on an empty store at once (e.g. ``bootstrap`` racing ``serve``).

    The race window is small, so it is tried on up to 100 fresh stores.
    """
    errors: list[BaseException] = []
    for attempt in range(100):
        async with backend.fresh_store(tmp_path / f"fresh-{attempt}") as location:
            opened: list[Any] = []

            async def opener(location: str = location, opened: list[Any] = opened) -> None:
                try:
                    opened.append(await backend.open(location))
                except Exception as exc:  # noqa: BLE001 - recorded and checked below
                    errors.append(exc)

            try:
                with trio.fail_after(30):
                    async with trio.open_nursery() as nursery:
                        for _ in range(2):
                            nursery.start_soon(opener)
            finally:
                for j in opened:
                    await j.aclose()
        if errors:
            break
    assert not errors, errors


# --- fencing ---------------------------------------------------------------------------


def test_batches_are_unfenced_by_default() -> None:
    assert Batch().fence == {}
    err = FencedError(3, 1, 2)
    assert (err.shard, err.expected, err.actual) == (3, 1, 2)


def _fenced_batch(rid: str, fence: dict[int, int], worker: str | None = None) -> Batch:
    return Batch(
        records=[(rid, 0, body(rid, 0)), (rid, 1, body(rid, 1))],
        runs=[run_row(rid)],
        instances=[instance_row(f"wf-{rid}", rid)],
        namespaces=[namespace_row(f"ns-{rid}")],
        workers=[worker_row(worker or f"w-{rid}")],
        fence=fence,
    )


async def _assert_nothing_of(journal: Any, rid: str) -> None:
    assert await journal.read_records(rid) == []
    assert await journal.get_run(rid) is None
    assert await journal.get_instance(NS, f"wf-{rid}") is None
    assert f"ns-{rid}" not in [n.name for n in await journal.list_namespaces()]
    assert f"w-{rid}" not in [w.worker_id for w in await journal.list_workers()]


async def test_fenced_append_commits_with_the_current_epochs(harness: Harness, backend: Backend, journal: Any) -> None:
    assert await journal.ensure_cluster(4) == 4
    await backend.set_epoch(harness.location, 1, 7)
    await backend.set_epoch(harness.location, 2, 3)

    await journal.append(_fenced_batch("f-one", {1: 7}))
    await journal.append(_fenced_batch("f-two", {1: 7, 2: 3, 0: 0}))
    for rid in ("f-one", "f-two"):
        assert await journal.read_records(rid) == [body(rid, 0), body(rid, 1)]
        assert await journal.get_run(rid) == run_row(rid)
        assert (await journal.get_instance(NS, f"wf-{rid}")).current_run_id == rid

    # Many concurrent fenced appenders with current epochs still share commits.
    n = 100
    commits0, batches0 = journal.commits, journal.batches
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(journal.append, Batch(records=[(f"fg-{i}", 0, b"x")], fence={i % 4: (0, 7, 3, 0)[i % 4]}))
    assert journal.batches - batches0 == n
    assert 1 <= journal.commits - commits0 <= n // 10, "fenced batches lost group commit"


async def test_fenced_append_with_a_stale_epoch_raises_and_writes_nothing(
    harness: Harness, backend: Backend, journal: Any
) -> None:
    await journal.ensure_cluster(4)
    await journal.append(Batch(records=[("held", 0, body("held", 0))], runs=[run_row("held")], fence={2: 0}))
    await backend.set_epoch(harness.location, 2, 1)  # another node claimed shard 2

    with pytest.raises(FencedError) as caught:
        await journal.append(_fenced_batch("stale", {2: 0}))
    assert (caught.value.shard, caught.value.expected, caught.value.actual) == (2, 0, 1)
    await _assert_nothing_of(journal, "stale")

    # One stale shard among good ones fences the whole batch; the lowest mismatch is reported.
    with pytest.raises(FencedError) as caught:
        await journal.append(_fenced_batch("stale2", {0: 0, 2: 0, 3: 0}))
    assert (caught.value.shard, caught.value.expected, caught.value.actual) == (2, 0, 1)
    await _assert_nothing_of(journal, "stale2")

    # A newer epoch than the shard's is refused too, and so is a shard that does not exist.
    with pytest.raises(FencedError):
        await journal.append(_fenced_batch("ahead", {2: 2}))
    with pytest.raises(FencedError) as caught:
        await journal.append(_fenced_batch("nowhere", {99: 0}))
    assert (caught.value.shard, caught.value.actual) == (99, None)
    for rid in ("ahead", "nowhere"):
        await _assert_nothing_of(journal, rid)

    # The fenced batch wrote nothing, so its positions are still free; with the new epoch it commits.
    await journal.append(_fenced_batch("stale", {2: 1}))
    assert await journal.read_records("stale") == [body("stale", 0), body("stale", 1)]
    assert await journal.read_records("held") == [body("held", 0)]
    # Unfenced batches ignore epochs (single node).
    await journal.append(Batch(records=[("held", 1, body("held", 1))]))
    assert await journal.read_records("held") == [body("held", 0), body("held", 1)]


async def test_fenced_out_batch_in_a_concurrent_group_fails_alone(
    harness: Harness, backend: Backend, journal: Any
) -> None:
    await journal.ensure_cluster(2)
    await backend.set_epoch(harness.location, 0, 5)
    await backend.set_epoch(harness.location, 1, 2)
    n, bad = 30, {7, 21}
    outcome: dict[int, BaseException | None] = {}
    commits0 = journal.commits

    async def appender(i: int) -> None:
        rid = f"fgrp-{i}"
        if i in bad:
            fence = {0: 4}  # the epoch before another node's claim
        elif i % 3 == 0:
            fence = {}  # unfenced neighbours
        else:
            fence = {0: 5, 1: 2} if i % 2 else {1: 2}
        try:
            await journal.append(_fenced_batch(rid, fence))
            outcome[i] = None
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            outcome[i] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(appender, i)

    assert {i for i, exc in outcome.items() if exc is not None} == bad, outcome
    assert journal.commits - commits0 <= n // 3, "the group was not committed together"
    for i in bad:
        exc = outcome[i]
        assert isinstance(exc, FencedError) and (exc.shard, exc.expected, exc.actual) == (0, 4, 5), exc
        await _assert_nothing_of(journal, f"fgrp-{i}")
    for i in set(range(n)) - bad:
        rid = f"fgrp-{i}"
        assert await journal.read_records(rid) == [body(rid, 0), body(rid, 1)]
        assert await journal.get_run(rid) == run_row(rid)


async def test_fenced_batch_with_a_conflict_and_a_fenced_out_one_in_one_group(
    harness: Harness, backend: Backend, journal: Any
) -> None:
    await journal.ensure_cluster(1)
    await journal.append(Batch(records=[("taken", 0, b"first")]))
    await backend.set_epoch(harness.location, 0, 1)
    outcome: dict[str, BaseException | None] = {}

    async def appender(name: str, batch: Batch) -> None:
        try:
            await journal.append(batch)
            outcome[name] = None
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            outcome[name] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(appender, "conflict", Batch(records=[("taken", 0, b"again")], fence={0: 1}))
        nursery.start_soon(appender, "fenced", _fenced_batch("fenced", {0: 0}))
        nursery.start_soon(appender, "good", _fenced_batch("good", {0: 1}))
    assert isinstance(outcome["conflict"], ConflictError), outcome
    assert isinstance(outcome["fenced"], FencedError), outcome
    assert outcome["good"] is None, outcome
    assert await journal.read_records("taken") == [b"first"]
    await _assert_nothing_of(journal, "fenced")
    assert await journal.read_records("good") == [body("good", 0), body("good", 1)]


# --- cluster settings and membership ---------------------------------------------------


async def test_ensure_cluster_first_second_and_mismatch(harness: Harness, journal: Any) -> None:
    assert await journal.shard_epochs() == {}
    assert await journal.ensure_cluster(8) == 8
    assert await journal.shard_epochs() == {i: (None, 0) for i in range(8)}
    assert await journal.ensure_cluster(8) == 8

    other = await harness.open()  # another node on the same store
    assert await other.ensure_cluster(8) == 8
    with pytest.raises(ValueError, match=r"shard_count=8") as caught:
        await other.ensure_cluster(16)
    assert "16" in str(caught.value)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            await journal.ensure_cluster(bad)
    assert await other.shard_epochs() == {i: (None, 0) for i in range(8)}


async def test_ensure_cluster_concurrent_first_callers_agree(harness: Harness, journal: Any) -> None:
    journals = [journal, await harness.open(), await harness.open()]
    counts = [6, 6, 9]
    outcome: dict[int, int | BaseException] = {}

    async def caller(i: int) -> None:
        try:
            outcome[i] = await journals[i].ensure_cluster(counts[i])
        except ValueError as exc:
            outcome[i] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(caller, i)

    stored = len(await journal.shard_epochs())
    assert stored in (6, 9)
    for i, count in enumerate(counts):
        if count == stored:
            assert outcome[i] == stored, outcome
        else:
            assert isinstance(outcome[i], ValueError) and f"shard_count={stored}" in str(outcome[i]), outcome
    assert await journal.shard_epochs() == {i: (None, 0) for i in range(stored)}


async def test_nodes_upsert_and_list(journal: Any) -> None:
    assert await journal.list_nodes() == []
    b = NodeRow("node-b", "http://127.0.0.1:8002", T0, T0 + 1, "active")
    a = NodeRow("node-a", None, None, None, "joining")
    await journal.upsert_node(b.node_id, b.advertise_url, b.started_at, b.heartbeat_at, b.status)
    await journal.upsert_node(a.node_id, a.advertise_url, a.started_at, a.heartbeat_at, a.status)
    assert await journal.list_nodes() == [a, b]

    a2 = NodeRow("node-a", "http://127.0.0.1:8001", T0 + 2, T0 + 3.5, "active")
    await journal.upsert_node(a2.node_id, a2.advertise_url, a2.started_at, a2.heartbeat_at, a2.status)
    b2 = replace(b, heartbeat_at=T0 + 4.25, status="leaving")
    await journal.upsert_node(b2.node_id, b2.advertise_url, b2.started_at, b2.heartbeat_at, b2.status)
    assert await journal.list_nodes() == [a2, b2]


# --- objects, search-attribute filters and keyset pages --------------------------------


async def test_objects_upsert_and_list_per_kind_and_namespace(journal: Any) -> None:
    await journal.append(Batch(objects=[ObjectRow(NS, "search_attribute", "Priority", {"type": "int"}, T0)]))
    await journal.append(Batch(objects=[ObjectRow(NS, "search_attribute", "Priority", {"type": "int", "deleted": True}, T0 + 1)]))
    await journal.append(Batch(objects=[ObjectRow("other", "search_attribute", "Stage", {"type": "keyword"}, T0)]))
    await journal.append(Batch(objects=[ObjectRow(NS, "schedule", "nightly", {"x": [1, "é"]}, T0)]))
    rows = await journal.list_objects("search_attribute")
    assert [(r.namespace, r.name, r.body) for r in rows] == [
        (NS, "Priority", {"type": "int", "deleted": True}),
        ("other", "Stage", {"type": "keyword"}),
    ]
    assert [r.name for r in await journal.list_objects("schedule", NS)] == ["nightly"]
    assert (await journal.list_objects("schedule", NS))[0].body == {"x": [1, "é"]}


async def test_search_attribute_predicates_filter_runs(journal: Any) -> None:
    rows = [
        run_row("r1", started_at=T0 + 1, search_attributes={"Stage": "gold", "Priority": 5, "Tags": ["a", "b"], "Vip": True}),
        run_row("r2", started_at=T0 + 2, search_attributes={"Stage": "silver", "Priority": 7, "Tags": ["b"]}),
        run_row("r3", started_at=T0 + 3, workflow_type="Refund", search_attributes={"Priority": 9.5}),
        # a value of another type under a numeric name (set before the type was registered):
        # it never matches a range and never fails the query
        run_row("r4", started_at=T0 + 4, search_attributes={"Priority": "high", "Stage": 7}),
    ]
    await journal.append(Batch(runs=rows))

    def attr(name: str, op: str, value: Any, kind: str) -> Predicate:
        return Predicate(op=op, value=value, attribute=name, type=kind)

    assert await run_ids(journal, predicates=[attr("Stage", "=", "gold", "keyword")]) == ["r1"]
    assert await run_ids(journal, predicates=[attr("Stage", "!=", "gold", "keyword")]) == ["r4", "r3", "r2"]
    assert await run_ids(journal, predicates=[attr("Priority", ">=", 7, "int")]) == ["r3", "r2"]
    assert await run_ids(journal, predicates=[attr("Priority", "<", 7, "int")]) == ["r1"]
    assert await run_ids(journal, predicates=[attr("Tags", "=", "b", "keyword_list")]) == ["r2", "r1"]
    assert await run_ids(journal, predicates=[attr("Tags", "=", "a", "keyword_list")]) == ["r1"]
    assert await run_ids(journal, predicates=[attr("Vip", "=", True, "bool")]) == ["r1"]
    column = Predicate(op="=", value="Refund", column="workflow_type")
    assert await run_ids(journal, predicates=[column]) == ["r3"]
    assert await run_ids(journal, predicates=[Predicate(op=">=", value=T0 + 2, column="started_at", type="datetime")]) == ["r4", "r3", "r2"]
    assert await run_ids(journal, predicates=[Predicate(op="in", value=["running"], column="status")]) == ["r4", "r3", "r2", "r1"]
    assert await run_ids(journal, predicates=[attr("Priority", ">", -(2**63), "int")]) == ["r3", "r2", "r1"]
    assert await run_ids(journal, predicates=[attr("Priority", "<=", 1e308, "double")]) == ["r3", "r2", "r1"]


async def test_keyset_pages_continue_after_the_last_row(journal: Any) -> None:
    await journal.append(Batch(runs=[run_row(f"r{i}", started_at=T0 + (i // 2)) for i in range(6)]))
    first = await list_runs(journal, limit=2)
    assert [r.run_id for r in first] == ["r5", "r4"]
    rest = await run_ids(journal, after=(first[-1].started_at, first[-1].run_id), limit=10)
    assert rest == ["r3", "r2", "r1", "r0"]
    await journal.append(Batch(runs=[run_row("r9", started_at=T0 + 10)]))  # a newer run does not shift the pages
    assert await run_ids(journal, after=(first[-1].started_at, first[-1].run_id), limit=10) == rest


async def test_retention_purges_only_expired_closed_runs(journal: Any) -> None:
    rows = [
        run_row("old", status="completed", closed_at=T0 - 100, started_at=T0 - 200),
        run_row("young", status="completed", closed_at=T0 + 100),
        run_row("open", status="running"),
    ]
    await journal.append(Batch(runs=rows, records=[("old", 1, body("old", 1)), ("old", 2, body("old", 2)), ("young", 1, body("young", 1))],
                               instances=[instance_row("wf-old", "old")]))
    assert await journal.expired_runs(NS, T0, 10) == ["old"]
    assert await journal.purge_runs(NS, ["old", "open"]) == {"runs": 1, "history_events": 2}
    assert await journal.read_records("old") == [] and await journal.get_run("old") is None
    assert await journal.get_instance(NS, "wf-old") is None
    assert len(await journal.read_records("young")) == 1 and await journal.get_run("open") is not None


async def test_deleting_a_namespace_removes_everything_in_it(journal: Any) -> None:
    await journal.append(Batch(
        namespaces=[namespace_row("doomed"), namespace_row("kept")],
        runs=[run_row("d1", namespace="doomed"), run_row("k1", namespace="kept")],
        records=[("d1", 1, body("d1", 1)), ("k1", 1, body("k1", 1)), ("schedule:doomed:s", 1, b"x"), ("schedule:kept:s", 1, b"y")],
        objects=[ObjectRow("doomed", "schedule", "s", {}, T0), ObjectRow("doomed", "search_attribute", "A", {"type": "int"}, T0),
                 ObjectRow("kept", "schedule", "s", {}, T0)],
        workers=[worker_row("w", namespace="doomed")],
    ))
    counts = await journal.delete_namespace("doomed")
    assert counts == {"workflow_runs": 1, "workflow_schedules": 1, "search_attribute_definitions": 1, "workflow_worker_registrations": 1}
    assert await journal.read_records("d1") == [] and await journal.read_records("schedule:doomed:s") == []
    assert len(await journal.read_records("k1")) == 1 and len(await journal.read_records("schedule:kept:s")) == 1
    assert [n.name for n in await journal.list_namespaces() if n.name in ("doomed", "kept")] == ["kept"]
    assert [r.namespace for r in await journal.list_objects("schedule")] == ["kept"]


# --- signatures accepted once (runtime.replay_guard) -------------------------------------


async def test_claim_once_is_first_once_per_key_across_journals_and_restarts(harness: Harness, journal: Any) -> None:
    """Two journals on one store stand for two nodes (or one node before and after a restart)."""
    a, b = b"\x01" * 32, b"\x02" * 32
    assert await journal.claim_once([(a, T0 + 600), (b, T0 + 600), (a, T0 + 600)], None) == [True, True, False]
    other = await harness.open()
    assert await other.claim_once([(a, T0 + 600), (b"\x03" * 32, T0 + 600)], None) == [False, True]
    await harness.close(journal)
    reopened = await harness.open()
    assert await reopened.claim_once([(b, T0 + 600)], None) == [False]
    # past its expiry a key is purged, and a purge forgets nothing that is still current
    assert await reopened.claim_once([(b"\x04" * 32, T0 + 1200)], T0 + 700) == [True]
    assert await reopened.claim_once([(a, T0 + 1300), (b"\x04" * 32, T0 + 1300)], None) == [True, False]


async def test_replay_guard_batches_concurrent_claims_and_shares_them(harness: Harness, journal: Any) -> None:
    from actors.clock import SystemClock
    from runtime.replay_guard import ReplayGuard

    other_journal = await harness.open()
    guards = [ReplayGuard(journal, SystemClock()), ReplayGuard(other_journal, SystemClock())]
    results: dict[tuple[int, int], bool] = {}
    async with trio.open_nursery() as nursery:
        for guard in guards:
            await nursery.start(guard.run)

        async def claim(node: int, i: int) -> None:
            results[(node, i)] = await guards[node].first_use(i.to_bytes(32, "big"), T0 + 600)

        async with trio.open_nursery() as inner:
            for i in range(50):
                inner.start_soon(claim, 0, i)
        async with trio.open_nursery() as inner:
            for i in range(50):
                inner.start_soon(claim, 1, i)  # the same 50 signatures at "another node"
                inner.start_soon(claim, 1, 50 + i)
        nursery.cancel_scope.cancel()
    assert all(results[(0, i)] for i in range(50))
    assert not any(results[(1, i)] for i in range(50))
    assert all(results[(1, 50 + i)] for i in range(50))
