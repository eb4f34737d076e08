"""Build-id rollouts (extended spec §10): which worker builds get which work on a task queue.

A run carries a compatibility marker (its start's ``build_id`` or ``compatibility``, else the
queue's promoted build, else none), inherited by its tasks, children and continuations; a task
with marker M goes only to workers registered with build id M (``actors.task_queue``). An
operator drains a build (its workers claim nothing new and finish what they hold), resumes it
(rollback) or promotes one for new starts. The intents are small journal objects, one per
queue; in a cluster each node re-reads them at most every ``FRESH_SECONDS``.
"""

from __future__ import annotations

from typing import Any

from persistence.ids import iso
from persistence.journal import Batch, ObjectRow, WorkerRow

from .engine import Engine
from .workers import WorkerService

KIND = "build_rollout"
FRESH_SECONDS = 5.0  # in a cluster, how old the intents a node routes by may be
UNVERSIONED = ""  # the key of the cohort of workers without a build id
ORDER = ("active", "active_with_draining", "draining", "stale_only", "no_workers")


def build_of(value: Any) -> str | None:
    """A build id as the protocol reads one: trimmed, an empty string means none."""
    return value.strip() or None if isinstance(value, str) else None


def _cohort(state: dict[str, Any] | None) -> dict[str, Any]:
    base = {"drain_intent": "active", "drained_at": None, "promoted_at": None, "rolled_back_at": None, "new_start_selected": False}
    return {**base, **(state or {})}


class BuildIdService:
    def __init__(self, engine: Engine, workers: WorkerService) -> None:
        self.engine = engine
        self.workers = workers
        self._intents: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._loaded_at = float("-inf")

    async def _fresh(self) -> None:
        now = self.engine.clock.now()
        single = self.engine.owned is None
        if single and self._loaded_at > float("-inf"):
            return  # one node: every change went through this object
        if not single and now - self._loaded_at < FRESH_SECONDS:
            return
        self._loaded_at = now
        intents: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for row in await self.engine.journal.list_objects(KIND):
            intents[(row.namespace, row.name)] = dict(row.body.get("cohorts") or {})
        self._intents = intents

    async def cohorts(self, namespace: str, queue: str) -> dict[str, dict[str, Any]]:
        await self._fresh()
        return self._intents.get((namespace, queue), {})

    async def promoted(self, namespace: str, queue: str | None) -> str | None:
        """The build new starts on ``queue`` are pinned to (None: unpinned)."""
        if not queue:
            return None
        selected = [key for key, state in (await self.cohorts(namespace, queue)).items() if state.get("new_start_selected")]
        return selected[0] or None if selected else None

    async def draining(self, namespace: str, queue: str, build: str | None) -> bool:
        state = (await self.cohorts(namespace, queue)).get(build or UNVERSIONED)
        return state is not None and state.get("drain_intent") == "draining"

    async def mutate(self, namespace: str, queue: str, build: str | None, action: str) -> dict[str, Any]:
        await self._fresh()
        now = self.engine.clock.now()
        cohorts = {k: dict(v) for k, v in self._intents.get((namespace, queue), {}).items()}
        key = build or UNVERSIONED
        state = _cohort(cohorts.get(key))
        if action == "drain":
            if state["drain_intent"] != "draining":
                state.update(drain_intent="draining", drained_at=iso(now))
            state["new_start_selected"] = False  # a drained build takes no new starts
        elif action in ("resume", "promote"):
            if state["drain_intent"] == "draining" and state.get("promoted_at"):
                state["rolled_back_at"] = iso(now)  # a promoted build drained and taken back
            state.update(drain_intent="active", drained_at=None)
            if action == "promote":
                for other in cohorts.values():
                    other["new_start_selected"] = False
                state.update(promoted_at=iso(now), new_start_selected=True)
        cohorts[key] = state
        await self.engine.journal.append(Batch(objects=[ObjectRow(namespace, KIND, queue, {"cohorts": cohorts}, now)]))
        self._intents[(namespace, queue)] = cohorts
        return {"namespace": namespace, "task_queue": queue, "build_id": build, **state}

    async def rollout(self, namespace: str, queue: str) -> dict[str, Any]:
        """The queue's build cohorts with their workers (extended §10.2)."""
        if self.engine.owned is not None:
            await self.workers.load()  # registrations made through other nodes
        now = self.engine.clock.now()
        intents = await self.cohorts(namespace, queue)
        groups: dict[str, list[WorkerRow]] = {}
        for (ns, _), row in self.workers.workers.items():
            if ns == namespace and row.task_queue == queue:
                groups.setdefault(build_of(row.info.get("build_id")) or UNVERSIONED, []).append(row)
        items = [self._item(key, groups.get(key, []), intents.get(key), now) for key in sorted(set(groups) | set(intents))]
        items.sort(key=lambda i: (ORDER.index(i["rollout_status"]), i["build_id"] is None, -(i["_last"] or 0.0)))
        for item in items:
            del item["_last"]
        return {"namespace": namespace, "task_queue": queue, "stale_after_seconds": int(self.workers.stale_after), "build_ids": items}

    def _item(self, key: str, rows: list[WorkerRow], intent: dict[str, Any] | None, now: float) -> dict[str, Any]:
        state = _cohort(intent)
        draining_intent = state["drain_intent"] == "draining"
        stale = [r for r in rows if self.workers.is_stale(r, now)]
        live = [r for r in rows if not self.workers.is_stale(r, now)]
        draining = live if draining_intent else []
        active = [] if draining_intent else live
        if active and (draining or draining_intent):
            status = "active_with_draining"
        elif active:
            status = "active"
        elif draining or draining_intent:
            status = "draining"
        elif stale:
            status = "stale_only"
        else:
            status = "no_workers"
        fingerprints: dict[str, dict[str, list[str]]] = {}
        for row in rows:
            for workflow_type, fingerprint in (row.info.get("workflow_definition_fingerprints") or {}).items():
                fingerprints.setdefault(workflow_type, {}).setdefault(str(fingerprint), []).append(row.worker_id)
        conflicts = [{"workflow_type": t, "fingerprints": sorted(f), "worker_ids": sorted(w for ids in f.values() for w in ids)}
                     for t, f in sorted(fingerprints.items()) if len(f) > 1]
        last = max((r.last_seen for r in rows), default=None)
        return {
            "build_id": key or None, "rollout_status": status, **state,
            "active_worker_count": len(active), "draining_worker_count": len(draining), "stale_worker_count": len(stale),
            "total_worker_count": len(rows), "runtimes": sorted({r.runtime for r in rows}),
            "sdk_versions": sorted({str(r.info["sdk_version"]) for r in rows if r.info.get("sdk_version")}),
            "last_heartbeat_at": iso(last), "first_seen_at": iso(min((r.registered_at for r in rows), default=None)),
            "workflow_definition_fingerprint_count": sum(len(f) for f in fingerprints.values()),
            "workflow_definition_fingerprint_conflicts": conflicts, "_last": last,
        }
