"""List-workflows latency on PostgreSQL with many runs (not a test: it measures).

``python -m ops.bench list --database postgresql://… --runs 100000`` creates a fresh schema,
applies the migrations, writes N run rows in one INSERT … generate_series (types, statuses,
search attributes spread so filters have known selectivity), then times the journal's own
``list_runs`` for each filter shape a user reaches for, page size 50. The schema is dropped
afterwards.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio
import trio_asyncio
from trio_asyncio import aio_as_trio

# isort: split
import asyncpg

from persistence.journal import Predicate
from persistence.postgres_journal import PostgresJournal

T0 = 1_700_000_000.0

_FILL = """
INSERT INTO runs (run_id, namespace, workflow_id, run_number, workflow_type, task_queue, status, closed_reason,
                  business_key, started_at, closed_at, wake_at, attention, last_seq, search_attributes, memo)
SELECT lpad(g::text, 26, '0'), 'default', 'wf-' || g, 1,
       (ARRAY['orders', 'refunds', 'emails', 'reports'])[1 + g % 4], 'q',
       (ARRAY['running', 'completed', 'failed', 'waiting', 'completed'])[1 + (g / 7) % 5], NULL, NULL,
       $2::float8 + g, NULL, NULL, false, 5,
       json_build_object('Customer', 'c-' || (g % 5000), 'Priority', g % 10,
                         'Region', (ARRAY['eu', 'us', 'apac'])[1 + g % 3])::text,
       '{}'
FROM generate_series(1, $1::int) AS g
"""


def _with_schema(dsn: str, schema: str) -> str:
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"] + [("search_path", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _cases(runs: int) -> list[tuple[str, dict[str, Any]]]:
    sa = lambda name, op, value, kind: Predicate(op=op, value=value, attribute=name, type=kind)  # noqa: E731
    return [
        ("newest page", {}),
        ("workflow_type = orders", {"workflow_type": "orders"}),
        ("status bucket running", {"statuses": ["pending", "running", "waiting"]}),
        ("Customer = c-42 (20 per 100k)", {"predicates": [sa("Customer", "=", "c-42", "keyword")]}),
        ("Customer = c-42 AND WorkflowType", {"predicates": [sa("Customer", "=", "c-42", "keyword"),
                                                             Predicate(op="=", value="emails", column="workflow_type")]}),
        ("Region = eu (1 in 3)", {"predicates": [sa("Region", "=", "eu", "keyword")]}),
        ("Priority >= 8 (1 in 5)", {"predicates": [sa("Priority", ">=", 8, "int")]}),
        ("keyset page in the middle", {"after": (T0 + runs / 2, f"{runs // 2:026d}")}),
        ("StartTime window of 1000 s", {"predicates": [Predicate(op=">=", value=T0 + runs / 2, column="started_at"),
                                                        Predicate(op="<", value=T0 + runs / 2 + 1000, column="started_at")]}),
        ("free text 'wf-4242' (LIKE, no index)", {"query": "wf-4242"}),
    ]


async def _bench(dsn: str, runs: int, samples: int) -> dict[str, Any]:
    schema = f"bench_list_{uuid.uuid4().hex[:8]}"
    admin = await aio_as_trio(asyncpg.connect)(dsn)
    await aio_as_trio(admin.execute)(f"CREATE SCHEMA {schema}")
    report: dict[str, Any] = {"runs": runs, "page_size": 50, "samples": samples, "cases": {}}
    try:
        journal = PostgresJournal(_with_schema(dsn, schema))
        await journal.open()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run_writer)
                started = time.perf_counter()
                await aio_as_trio(admin.execute)(f"SET search_path = {schema}")
                await aio_as_trio(admin.execute)(_FILL, runs, T0)
                await aio_as_trio(admin.execute)("ANALYZE runs")
                report["fill_seconds"] = round(time.perf_counter() - started, 1)
                for name, kwargs in _cases(runs):
                    times = []
                    for _ in range(samples):
                        t0 = time.perf_counter()
                        rows = await journal.list_runs("default", limit=51, **kwargs)
                        times.append((time.perf_counter() - t0) * 1000)
                    times.sort()
                    report["cases"][name] = {
                        "rows": len(rows),
                        "p50_ms": round(statistics.median(times), 2),
                        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
                    }
                nursery.cancel_scope.cancel()
        finally:
            await journal.aclose()
    finally:
        await aio_as_trio(admin.execute)(f"DROP SCHEMA {schema} CASCADE")
        await aio_as_trio(admin.close)()
    return report


def list_bench(dsn: str, runs: int, samples: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with trio_asyncio.open_loop():
            return await _bench(dsn, runs, samples)

    return trio.run(main)
