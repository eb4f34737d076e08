"""Shard arithmetic: which shard an address belongs to, and each node's fair share.

Pure functions. Runs hash by (namespace, workflow id) so every run of an instance and
its start-time duplicate check live on one shard; task queues and schedules hash by
(namespace, name). The count is fixed when the cluster is created.
"""

from __future__ import annotations

from persistence.ids import shard_of

__all__ = ["DEFAULT_SHARD_COUNT", "fair_share", "plan", "shard_of"]

DEFAULT_SHARD_COUNT = 64


def fair_share(count: int, nodes: list[str], node: str) -> int:
    """How many shards ``node`` should own when ``nodes`` are alive (sorted order breaks ties)."""
    ordered = sorted(set(nodes))
    if node not in ordered:
        return 0
    base, extra = divmod(count, len(ordered))
    return base + (1 if ordered.index(node) < extra else 0)


def plan(count: int, nodes: list[str], node: str, owners: dict[int, str | None]) -> tuple[list[int], list[int]]:
    """Shards to claim and shards to hand over so that ``node`` converges to its fair share.

    Claims take free shards only (a shard owned by a live node is never stolen; its owner
    releases surplus). Releases give back the highest-numbered surplus shards, and only
    while some live node is below its share, so a stable cluster does not churn.
    """
    live = set(nodes)
    target = fair_share(count, nodes, node)
    mine = sorted(s for s, owner in owners.items() if owner == node)
    free = sorted(s for s in range(count) if owners.get(s) is None or owners.get(s) not in live)
    if len(mine) < target:
        return free[: target - len(mine)], []
    surplus = len(mine) - target
    if surplus <= 0:
        return [], []
    held = {n: sum(1 for o in owners.values() if o == n) for n in live}
    hungry = any(held.get(n, 0) < fair_share(count, nodes, n) for n in live if n != node)
    return [], (mine[-surplus:] if hungry else [])
