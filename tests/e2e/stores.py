"""The journal backends an end-to-end test can run a server on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.postgres_required import postgres_url

BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def store(backend: str) -> Iterator[str | None]:
    """Yield the --database value for a fresh, empty store (None means the embedded SQLite).

    PostgreSQL: skipped or failed by ``tests.postgres_required.postgres_url`` when there is none.
    """
    if backend == "sqlite":
        yield None
        return
    import asyncpg

    url = postgres_url()
    schema = f"e2e_{uuid.uuid4().hex[:12]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}search_path={schema}"
    finally:
        asyncio.run(execute(f"DROP SCHEMA {schema} CASCADE"))
