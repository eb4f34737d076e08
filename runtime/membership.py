"""The operator's view of the cluster: members, liveness and how many shards each owns."""

from __future__ import annotations

import collections
from typing import Any

from persistence.ids import iso
from persistence.journal import Journal


async def cluster_view(journal: Journal, *, node_id: str, shard_count: int, clustered: bool, now: float) -> dict[str, Any]:
    """The same summary for ``GET /api/cluster/info`` and ``dw-server cluster status``."""
    if not clustered:
        return {
            "mode": "single_node",
            "node_id": node_id,
            "shard_count": shard_count,
            "nodes": [{"node_id": node_id, "status": "active", "shards_owned": shard_count, "advertise_url": None}],
        }
    owners = collections.Counter(owner for owner, _epoch in (await journal.shard_epochs()).values())
    nodes = []
    for row in await journal.list_nodes():
        fresh = row.heartbeat_at is not None and now - row.heartbeat_at < 10
        nodes.append(
            {
                "node_id": row.node_id,
                "advertise_url": row.advertise_url,
                "status": row.status if fresh or row.status != "active" else "unresponsive",
                "heartbeat_at": iso(row.heartbeat_at),
                "started_at": iso(row.started_at),
                "shards_owned": owners.get(row.node_id, 0) if fresh and row.status == "active" else 0,
            }
        )
    return {
        "mode": "cluster",
        "node_id": node_id,
        "shard_count": shard_count,
        "unowned_shards": shard_count - sum(n["shards_owned"] for n in nodes),
        "nodes": nodes,
    }


def render_table(view: dict[str, Any]) -> str:
    lines = [f"{view['mode']}: {view['shard_count']} shards" + (
        f", {view['unowned_shards']} unowned" if "unowned_shards" in view else ""
    )]
    lines.append(f"{'NODE':<28} {'STATUS':<13} {'SHARDS':>6}  {'HEARTBEAT':<28} ADDRESS")
    for n in view["nodes"]:
        lines.append(
            f"{n['node_id']:<28} {n['status']:<13} {n['shards_owned']:>6}  {n.get('heartbeat_at') or '-':<28} "
            f"{n.get('advertise_url') or '-'}"
        )
    return "\n".join(lines)
