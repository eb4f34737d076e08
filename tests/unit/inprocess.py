"""One node and its HTTP app in the test's own trio run: no sockets, no processes.

``node_app`` starts ``runtime.node.Node`` (the embedded SQLite journal in ``tmp_path``, or
PostgreSQL when a DSN is given: then the node runs clustered, with its shard manager) and
yields it with a Quart test client for ``api.app.create_app``. Lighter than a server process
for behaviour that lives in the request pipeline or the runtime.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from api.app import create_app
from runtime.config import Config
from runtime.node import Node, journal_loop

CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


@asynccontextmanager
async def node_app(
    tmp_path: Path, database: str | None = None, *, own_loop: bool = True, **overrides: Any
) -> AsyncIterator[tuple[Node, Any]]:
    """``own_loop=False`` when the caller already runs ``trio_asyncio.open_loop()`` (several nodes in one test)."""
    overrides.setdefault("port", 0)  # no listener: no advertise URL unless one is given
    cfg = Config.from_env(data_dir=str(tmp_path / f"node-{uuid.uuid4().hex[:6]}"), database=database, **overrides)
    if database is None:
        cfg.database = None  # DW_DATABASE_URL of the environment does not apply
    async with journal_loop(cfg) if own_loop else _no_loop():
        node = Node(cfg)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(node.run)
            app = create_app(node)
            async with app.test_app() as test_app:
                yield node, test_app.test_client()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _no_loop() -> AsyncIterator[None]:
    yield


@asynccontextmanager
async def postgres_schema(url: str) -> AsyncIterator[str]:
    """A fresh schema in ``url``'s database, dropped afterwards: yields the DSN selecting it."""
    import asyncpg

    schema = f"h_{uuid.uuid4().hex[:12]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def run(sql: str) -> None:
        # outside any asyncio loop of the test: a short-lived one in a thread
        await trio.to_thread.run_sync(asyncio.run, execute(sql))

    await run(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}search_path={schema}"
    finally:
        with trio.CancelScope(shield=True):
            await run(f"DROP SCHEMA {schema} CASCADE")
