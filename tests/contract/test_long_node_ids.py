"""Two members whose node ids are at the maximum length share a cluster's shards (PostgreSQL).

47 characters is what a lease session's ``application_name`` (``dw-shard-leases:<id>``, 63
bytes) leaves of a node id; the config side, and what goes wrong above it, is in
tests/unit/test_long_node_ids.py. Here two in-process nodes with 47-character ids that differ
only in their last character must see each other live and split the shards. PostgreSQL only;
skipped without ``DW_TEST_DATABASE_URL`` except in CI.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from tests.postgres_required import postgres_url
from tests.unit.inprocess import node_app, postgres_schema
from tests.unit.test_long_node_ids import MAX_NODE_ID

SHARDS = 4


async def _owned(http: Any) -> dict[str, int]:
    r = await http.get("/api/cluster/info")
    assert r.status_code == 200
    return {n["node_id"]: n["shards_owned"] for n in (await r.get_json())["cluster"]["nodes"]}


async def test_two_members_with_ids_at_the_maximum_split_the_shards(tmp_path: Path) -> None:
    url = postgres_url()  # skips outside CI without a database, fails in CI
    assert url is not None
    stem = f"long-{uuid.uuid4().hex[:8]}-"  # unique on the server: no other test's session matches
    ids = [stem + "x" * (MAX_NODE_ID - len(stem) - 1) + str(i) for i in (1, 2)]
    assert all(len(i) == MAX_NODE_ID for i in ids) and ids[0][:-1] == ids[1][:-1]
    async with postgres_schema(url) as dsn, trio_asyncio.open_loop():
        async with node_app(tmp_path, database=dsn, own_loop=False, node_id=ids[0], shard_count=SHARDS) as (_n1, http1):
            assert await _owned(http1) == {ids[0]: SHARDS}
            async with node_app(tmp_path, database=dsn, own_loop=False, node_id=ids[1], shard_count=SHARDS) as (_n2, http2):
                with trio.fail_after(30):
                    while await _owned(http1) != {ids[0]: 2, ids[1]: 2}:
                        await trio.sleep(0.2)
                assert await _owned(http2) == {ids[0]: 2, ids[1]: 2}
