"""Retention: closed runs older than their namespace's ``retention_days`` are purged.

A background pass on every node purges the expired runs of the shards it owns (all of them
on a single node) and re-reads the namespace directory, so namespaces created or deleted
through another node are seen here too. ``/api/system/retention`` shows what a pass would
purge and runs one on demand.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from persistence.ids import iso, shard_of_run

from .engine import Engine
from .namespaces import NamespaceService

log = logging.getLogger("dw.retention")
DAY = 86400.0


class RetentionService:
    def __init__(self, engine: Engine, namespaces: NamespaceService, *, interval: float = 3600.0) -> None:
        self.engine = engine
        self.namespaces = namespaces
        self.interval = interval

    def _cutoff(self, namespace: str) -> tuple[int, float]:
        row = self.namespaces.get(namespace)
        return row.retention_days, self.engine.clock.now() - row.retention_days * DAY

    def _mine(self, run_id: str) -> bool:
        owned = self.engine.owned
        return owned is None or shard_of_run(run_id) in owned

    async def status(self, namespace: str, limit: int) -> dict[str, Any]:
        days, cutoff = self._cutoff(namespace)
        ids = await self.engine.journal.expired_runs(namespace, cutoff, limit + 1)
        return {
            "namespace": namespace, "retention_days": days, "cutoff": iso(cutoff), "expired_run_count": min(len(ids), limit),
            "expired_run_ids": ids[:limit], "scan_limit": limit, "scan_pressure": len(ids) > limit,
        }

    async def run_pass(self, namespace: str, run_ids: list[str] | None, limit: int) -> dict[str, Any]:
        days, cutoff = self._cutoff(namespace)
        if run_ids is None:
            candidates = await self.engine.journal.expired_runs(namespace, cutoff, limit)
        else:
            candidates = list(dict.fromkeys(run_ids))
        expired = set(await self.engine.journal.expired_runs(namespace, cutoff, 1_000_000)) if run_ids is not None else set(candidates)
        results: list[dict[str, Any]] = []
        for run_id in candidates:
            if run_id not in expired:
                results.append({"run_id": run_id, "outcome": "skipped", "reason": "not_expired"})
                continue
            try:
                done = await self.engine.journal.purge_runs(namespace, [run_id])
            except Exception as exc:  # noqa: BLE001 - reported per run; the pass goes on
                log.warning("retention: purging %s failed: %s", run_id, exc)
                results.append({"run_id": run_id, "outcome": "error", "reason": str(exc)[:300]})
                continue
            actor = self.engine.actors.get(run_id)
            if actor is not None:
                actor.stop()
                self.engine.forget(actor)
            results.append({"run_id": run_id, "outcome": "pruned", "history_events_deleted": done["history_events"],
                            "tasks_deleted": 0, "external_payloads_deleted": 0, "deleted": done["runs"] > 0})
        return {
            "processed": len(results),
            "pruned": sum(1 for r in results if r["outcome"] == "pruned"),
            "skipped": sum(1 for r in results if r["outcome"] == "skipped"),
            "failed": sum(1 for r in results if r["outcome"] == "error"),
            "results": results,
        }

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_sweep = self.engine.clock.now()
        while True:
            await trio.sleep(min(self.interval, 30.0))
            try:
                await self.namespaces.load()
                if self.engine.clock.now() - last_sweep >= self.interval:
                    last_sweep = self.engine.clock.now()
                    await self._sweep()
            except Exception:  # noqa: BLE001 - retried on the next round
                log.exception("retention pass failed; retried later")

    async def _sweep(self) -> None:
        for namespace in list(self.namespaces.rows):
            _, cutoff = self._cutoff(namespace)
            ids = [r for r in await self.engine.journal.expired_runs(namespace, cutoff, 1000) if self._mine(r)]
            if ids:
                out = await self.run_pass(namespace, ids, len(ids))
                log.info("retention: purged %d closed runs of %s older than %s", out["pruned"], namespace, iso(cutoff))
