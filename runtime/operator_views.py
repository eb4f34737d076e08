"""What an operator sees of workers and task queues (control-plane §8, §10).

Read-only views over the worker registry and the node's live run state: pollers with their
staleness, ready and leased tasks per queue, the oldest ready task and its age, current
leases. A task queue's backlog is gathered where its runs live; in a cluster the queue is
described by the node hosting its home shard (requests elsewhere are forwarded there) and
counts the runs that node owns.
"""

from __future__ import annotations

from typing import Any

from persistence.ids import iso
from persistence.journal import WorkerRow

from .engine import Engine
from .errors import ProtocolError
from .workers import WorkerService


def worker_item(row: WorkerRow, now: float, stale_after: float) -> dict[str, Any]:
    stale = now - row.last_seen >= stale_after
    info = row.info
    return {
        "worker_id": row.worker_id,
        "namespace": row.namespace,
        "task_queue": row.task_queue,
        "runtime": row.runtime,
        "sdk_version": info.get("sdk_version"),
        "build_id": info.get("build_id"),
        "supported_workflow_types": info.get("supported_workflow_types") or [],
        "workflow_definition_fingerprints": info.get("workflow_definition_fingerprints") or {},
        "supported_activity_types": info.get("supported_activity_types") or [],
        "max_concurrent_workflow_tasks": info.get("max_concurrent_workflow_tasks"),
        "max_concurrent_activity_tasks": info.get("max_concurrent_activity_tasks"),
        "status": "stale" if stale else "active",
        "is_stale": stale,
        "last_heartbeat_at": iso(row.last_seen),
        "heartbeat_expires_at": iso(row.last_seen + stale_after),
        "registered_at": iso(row.registered_at),
    }


class OperatorViews:
    def __init__(self, engine: Engine, workers: WorkerService) -> None:
        self.engine = engine
        self.workers = workers

    async def _rows(self, namespace: str) -> list[WorkerRow]:
        if self.engine.owned is not None:
            await self.workers.load()  # registrations made through other nodes
        return [w for (ns, _), w in self.workers.workers.items() if ns == namespace]

    async def list_workers(self, namespace: str, task_queue: str | None, status: str | None) -> dict[str, Any]:
        now = self.engine.clock.now()
        items = [worker_item(w, now, self.workers.stale_after) for w in await self._rows(namespace)]
        if task_queue:
            items = [i for i in items if i["task_queue"] == task_queue]
        if status:
            items = [i for i in items if i["status"] == status]
        items.sort(key=lambda i: i["last_heartbeat_at"] or "", reverse=True)
        return {"namespace": namespace, "workers": items, "stale_after_seconds": int(self.workers.stale_after)}

    async def describe_worker(self, namespace: str, worker_id: str) -> dict[str, Any]:
        row = next((w for w in await self._rows(namespace) if w.worker_id == worker_id), None)
        if row is None:
            raise ProtocolError(404, "worker_not_found", f"Worker [{worker_id}] not found in namespace [{namespace}].", worker_id=worker_id)
        item = worker_item(row, self.engine.clock.now(), self.workers.stale_after)
        item.update(
            updated_at=iso(row.last_seen), task_slots=row.info.get("task_slots"), process_metrics=row.info.get("process_metrics"),
            heartbeat_interval_seconds=30, stale_after_seconds=int(self.workers.stale_after),
        )
        return item

    def _tasks(self, namespace: str, queue: str | None) -> list[dict[str, Any]]:
        """Every ready or leased task of the runs this node holds, optionally for one queue."""
        now = self.engine.clock.now()
        out: list[dict[str, Any]] = []
        for run in self.engine.work_views():
            if run.namespace != namespace or not run.is_open:
                continue
            wt = run.workflow_task
            if wt is not None and (queue is None or wt.queue == queue):
                out.append({
                    "queue": wt.queue, "task_id": wt.task_id, "task_type": "workflow", "status": wt.status,
                    "workflow_id": run.workflow_id, "run_id": run.run_id, "available_at": wt.available_at,
                    "lease_owner": wt.lease_owner, "lease_expires_at": wt.lease_expires_at, "attempt": wt.attempt,
                })
            for act in run.activities:
                if act.status == "closed" or (queue is not None and act.queue != queue):
                    continue
                leased = act.status == "running" and not act.attempt_closed
                out.append({
                    "queue": act.queue, "task_id": act.task_id, "task_type": "activity", "status": "leased" if leased else "ready",
                    "workflow_id": run.workflow_id, "run_id": run.run_id, "available_at": act.available_at,
                    "lease_owner": act.lease_owner if leased else None, "lease_expires_at": act.lease_expires_at if leased else None,
                    "attempt": act.attempt, "attempt_id": act.attempt_id if leased else None,
                })
        for t in out:
            t["is_expired"] = t["status"] == "leased" and t["lease_expires_at"] is not None and t["lease_expires_at"] <= now
        return out

    def _stats(self, tasks: list[dict[str, Any]], pollers: list[dict[str, Any]], now: float) -> dict[str, Any]:
        ready = [t for t in tasks if t["status"] == "ready" and t["available_at"] <= now]
        oldest = min(ready, key=lambda t: t["available_at"]) if ready else None
        age = int(now - oldest["available_at"]) if oldest else 0

        def counts(kind: str) -> dict[str, int]:
            of = [t for t in tasks if t["task_type"] == kind]
            return {
                "ready_count": sum(1 for t in of if t["status"] == "ready"),
                "leased_count": sum(1 for t in of if t["status"] == "leased"),
                "expired_lease_count": sum(1 for t in of if t["is_expired"]),
            }

        return {
            "approximate_backlog_count": len(ready),
            "approximate_backlog_age": f"{age}s",
            "approximate_backlog_age_seconds": age,
            "oldest_ready_task": None if oldest is None else {
                "task_id": oldest["task_id"], "task_type": oldest["task_type"], "workflow_id": oldest["workflow_id"],
                "run_id": oldest["run_id"], "available_at": iso(oldest["available_at"]), "age_seconds": age,
            },
            "workflow_tasks": counts("workflow"),
            "activity_tasks": counts("activity"),
            "pollers": {
                "active_count": sum(1 for p in pollers if not p["is_stale"]),
                "stale_count": sum(1 for p in pollers if p["is_stale"]),
                "stale_after_seconds": int(self.workers.stale_after),
            },
        }

    async def list_task_queues(self, namespace: str) -> dict[str, Any]:
        now = self.engine.clock.now()
        rows = await self._rows(namespace)
        tasks = self._tasks(namespace, None)
        names = sorted({w.task_queue for w in rows} | {t["queue"] for t in tasks})
        items = []
        for name in names:
            pollers = [worker_item(w, now, self.workers.stale_after) for w in rows if w.task_queue == name]
            items.append({"name": name, "namespace": namespace, "stats": self._stats([t for t in tasks if t["queue"] == name], pollers, now)})
        return {"namespace": namespace, "task_queues": items}

    async def describe_task_queue(self, namespace: str, name: str) -> dict[str, Any]:
        now = self.engine.clock.now()
        pollers = [worker_item(w, now, self.workers.stale_after) for w in await self._rows(namespace) if w.task_queue == name]
        tasks = self._tasks(namespace, name)
        leases = [
            {
                "task_id": t["task_id"], "task_type": t["task_type"], "workflow_id": t["workflow_id"], "run_id": t["run_id"],
                "lease_owner": t["lease_owner"], "lease_expires_at": iso(t["lease_expires_at"]), "is_expired": t["is_expired"],
                **({"workflow_task_attempt": t["attempt"]} if t["task_type"] == "workflow" else
                   {"activity_attempt_id": t["attempt_id"], "attempt_number": t["attempt"]}),
            }
            for t in tasks if t["status"] == "leased"
        ]
        return {"name": name, "namespace": namespace, "pollers": pollers, "stats": self._stats(tasks, pollers, now), "current_leases": leases}
