"""The journal backends an end-to-end test can run a server on."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

BACKENDS = ["sqlite", "postgresql"]


def postgres_url() -> str:
    url = os.environ.get("DW_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("DW_TEST_DATABASE_URL must be set in CI: the PostgreSQL cases may not be skipped there")
        pytest.skip("set DW_TEST_DATABASE_URL=postgresql://… to run the PostgreSQL cases")
    return url


@contextmanager
def store(backend: str) -> Iterator[str | None]:
    """Yield the --database value for a fresh, empty store (None means the embedded SQLite)."""
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
