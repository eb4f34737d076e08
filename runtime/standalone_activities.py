"""Standalone activities (extended spec §8): starting, describing and listing jobs.

A job is a host run (``actors.standalone``) of an instance whose id is the activity id, so it
is sharded, journaled, forwarded and recovered exactly like a workflow run: the request for an
id runs on the node owning the id's shard (``NotOwner`` sends it there).
"""

from __future__ import annotations

from typing import Any

import trio

from actors import messages as m
from actors.emit import new_run_meta
from actors.standalone import HOST_TYPE
from persistence.ids import run_ulid, shard_of, ulid
from persistence.journal import InstanceRow
from persistence.vocabulary import STATUS_BUCKETS

from . import page_tokens
from .engine import Engine
from .errors import ProtocolError
from .workflows import WorkflowService, list_token, read_list_token

MAX_WAIT_SECONDS = 30.0


def not_found(activity_id: str) -> ProtocolError:
    return ProtocolError(404, "activity_not_found", f"Standalone activity [{activity_id}] was not found.", activity_id=activity_id)


def mint_id(engine: Engine, namespace: str) -> str:
    """A new id whose shard this node owns, so the start needs no second hop (a forwarded
    request without an id would mint another one there, for another shard)."""
    while True:
        candidate = ulid()
        if engine.owned is None or shard_of(namespace, candidate, engine.shard_count) in engine.owned:
            return candidate


class StandaloneActivityService:
    def __init__(self, engine: Engine, workflows: WorkflowService) -> None:
        self.engine = engine
        self.workflows = workflows  # instances and their locks are shared with workflow starts

    async def start(self, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
        activity_id = spec.get("activity_id") or mint_id(self.engine, namespace)
        async with self.workflows.starting.hold((namespace, activity_id)):
            return await self._start_locked(namespace, activity_id, spec)

    async def _start_locked(self, namespace: str, activity_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        found = await self.engine.journal.find_instances(activity_id)
        inst = next((i for i in found if i.namespace == namespace), None)
        if found and inst is None:
            raise ProtocolError(409, "activity_id_reserved", f"The id [{activity_id}] is already reserved in another namespace.",
                                activity_id=activity_id)
        run_number, created_at = 1, None
        if inst is not None:
            if inst.workflow_type != HOST_TYPE:
                raise ProtocolError(
                    409, "activity_id_reserved",
                    f"The id [{activity_id}] belongs to a workflow of type [{inst.workflow_type}]; choose another activity id.",
                    activity_id=activity_id, workflow_type=inst.workflow_type,
                )
            current = await self.workflows.current(namespace, activity_id)
            if current.is_open:
                raise ProtocolError(
                    409, "activity_already_running", f"Standalone activity [{activity_id}] is already running.",
                    activity_id=activity_id, workflow_run_id=current.run_id,
                )
            run_number, created_at = inst.run_count + 1, inst.created_at
        now = self.engine.clock.now()
        shard = shard_of(namespace, activity_id, self.engine.shard_count)
        run_id = run_ulid(shard, now)
        meta = new_run_meta(
            run_id=run_id, namespace=namespace, workflow_id=activity_id, workflow_type=HOST_TYPE,
            task_queue=spec["queue"], run_number=run_number, arguments=spec.get("arguments"), now=now,
            execution_timeout=None, run_timeout=None, business_key=spec.get("business_key"), command_id=ulid(now),
            shard=shard, shard_count=self.engine.shard_count,
        )
        meta["instance_created_at"] = created_at if created_at is not None else now
        meta["standalone"] = {k: spec[k] for k in ("activity_type", "activity_class", "queue", "policy")}
        meta["standalone"]["arguments"] = spec.get("arguments")
        instance = InstanceRow(namespace, activity_id, HOST_TYPE, run_id, run_number, meta["instance_created_at"])
        await self.engine.start_new(run_id, m.StartRun(meta=meta, accepted=True, instance=instance))
        self.workflows.remember(instance)
        item, _ = await self.engine.ask(run_id, m.ReadJob())
        keys = ("activity_id", "activity_execution_id", "workflow_run_id", "workflow_type", "activity_type", "activity_class",
                "task_queue", "status", "payload_codec", "started_at", "schedule_to_start_deadline_at",
                "schedule_to_close_deadline_at", "run_number")
        return {"started": True, **{k: item[k] for k in keys}}

    async def describe(self, namespace: str, activity_id: str, wait_seconds: float = 0.0,
                       after_status: str | None = None) -> dict[str, Any]:
        """The job's view; with ``wait_seconds``, held until it closes (or its status is no
        longer ``after_status``) or the wait ends — a result long-poll without a busy loop."""
        deadline = trio.current_time() + min(max(wait_seconds, 0.0), MAX_WAIT_SECONDS)
        while True:
            inst = await self.workflows.instance(namespace, activity_id)
            if inst is None or inst.workflow_type != HOST_TYPE:
                raise not_found(activity_id)
            try:
                view = await self.workflows.current(namespace, activity_id)
            except ProtocolError as exc:
                raise not_found(activity_id) if exc.reason == "instance_not_found" else exc from None
            item, changed = await self.engine.ask(view.run_id, m.ReadJob())
            settled = item["status"] != "running" or (after_status is not None and item["activity_status"] != after_status)
            if settled or trio.current_time() >= deadline:
                return dict(item)
            with trio.move_on_at(deadline):
                await changed.wait()

    async def list(self, namespace: str, status: str | None, size: int, token: str | None) -> dict[str, Any]:
        fingerprint = page_tokens.fingerprint(namespace, HOST_TYPE, status)
        offset, after = read_list_token(token, fingerprint)
        rows = await self.engine.journal.list_runs(
            namespace, workflow_type=HOST_TYPE, statuses=list(STATUS_BUCKETS[status]) if status else None,
            after=after, offset=offset, limit=size + 1,
        )
        page = rows[:size]
        items = []
        for row in page:
            item = dict(row.detail) if row.detail else {"activity_id": row.workflow_id, "workflow_run_id": row.run_id}
            item.update(status=row.status if row.status != "pending" else "running", closed_reason=row.closed_reason)
            items.append(item)
        more = len(rows) > size
        next_token = list_token(page[-1].started_at, page[-1].run_id, fingerprint) if more and page else None
        return {"activities": items, "activity_count": len(items), "next_page_token": next_token}
