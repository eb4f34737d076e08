"""Synchronous update validation (extended spec §4): before an update is recorded, a worker runs
the workflow's validator on the run's committed history; a rejection refuses the update with
nothing written.

The shape is the query tasks' (``runtime.queries``): the node that owns the run builds the task
(it holds the history) and waits; the node hosting the task queue's home holds it and hands it
to a worker's multiplexed workflow poll (``task_kinds``), ahead of ordinary workflow tasks since
a caller is waiting; the worker's verdict comes back there. Nothing is journaled.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actors import messages as m
from actors import validation_tasks as vt
from actors.task_queue import Offer
from persistence.ids import run_ulid, shard_of_run

from .engine import Engine
from .ephemeral_tasks import hold_until_answered
from .errors import ForwardTo, ProtocolError
from .router import Unreachable
from .workers import WorkerService

log = logging.getLogger("dw.update_validation")
FINISHED_MEMORY_SECONDS = 120.0
CAPABILITY = "update_validation_tasks"
SEMANTICS = {
    "supported": True, "acceptance_boundary": "validator_approved", "worker_capability": CAPABILITY,
    "workflow_contract_field": "update_validators",
    "task_poll": {"strategy": "multiplexed", "endpoint": "/worker/workflow-tasks/poll", "request_field": "task_kinds",
                  "response_discriminator": "task.task_kind", "task_kinds": ["workflow", "update_validation"]},
}


class UpdateValidationService:
    def __init__(self, engine: Engine, workers: WorkerService, *, timeout: float) -> None:
        self.engine = engine
        self.workers = workers
        self.timeout = timeout
        self.tasks: dict[str, vt.ValidationTask] = {}
        self._answered: dict[str, trio.Event] = {}
        self._finished: dict[str, float] = {}
        self._joined: dict[tuple[str, str], tuple[tuple[Any, ...], trio.Event, list[dict[str, Any]]]] = {}

    # --- the caller's side (on the run's owner) -------------------------------------

    async def required(self, run: m.RunView, name: str) -> bool:
        queue = run.task_queue or "default"
        validated = await self.workers.declared(run.namespace, queue, run.workflow_type, "update_validators") or set()
        return name in validated or name in self.workers.validators_seen.get((run.namespace, queue, run.workflow_type), ())

    async def validate(self, run: m.RunView, name: str, arguments: Any, request_id: str | None) -> None:
        """Returns when a worker approved the update; raises the refusal the caller gets otherwise."""
        base = {"workflow_id": run.workflow_id, "run_id": run.run_id, "update_name": name}
        if not request_id:
            raise ProtocolError(422, "update_validation_request_id_required",
                                f"Update [{name}] has a validator: send a request_id so a retry joins the same validation.", **base)
        key = (run.run_id, request_id)
        intent = (name, repr(arguments))
        joined = self._joined.get(key)
        if joined is not None:
            if joined[0] != intent:
                raise ProtocolError(409, "request_id_conflict", "This request_id was used for a different update.",
                                    retained_command_type="update", conflict="intent", **base)
            await joined[1].wait()
            outcome = joined[2][0]
        else:
            done, holder = trio.Event(), []
            self._joined[key] = (intent, done, holder)
            try:
                outcome = await self._run(run, name, arguments)
                holder.append(outcome)
            except ProtocolError as exc:
                holder.append({"error": exc})
                raise
            finally:
                done.set()
                self._joined.pop(key, None)
        if "error" in outcome:
            raise outcome["error"]
        if outcome.get("approved"):
            return
        reason = outcome["reason"]
        if reason == "update_validator_rejected":
            raise ProtocolError(422, "update_validator_rejected", outcome["message"], validation_errors=outcome["validation_errors"],
                                outcome="rejected_validator", update_status="rejected", **base)
        raise ProtocolError(409, reason, outcome["message"], retryable=True, **base)

    async def _run(self, run: m.RunView, name: str, arguments: Any) -> dict[str, Any]:
        queue = run.task_queue or "default"
        history = await self.engine.ask(run.run_id, m.ReadHistory(after=0))
        body = {
            "workflow_id": run.workflow_id, "run_id": run.run_id, "workflow_type": run.workflow_type, "update_name": name,
            "update_id": None, "payload_codec": "avro", "workflow_arguments": run.arguments, "update_arguments": arguments,
            "history_events": history.events,
        }
        return await self._submit_at_home(run.namespace, queue, run.workflow_type, body)

    async def _submit_at_home(self, namespace: str, queue: str, workflow_type: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.engine.router.is_local_queue("workflow", namespace, queue):
            return await self.submit(namespace, queue, workflow_type, body)
        home = self.engine.queue_home("workflow", namespace, queue)
        try:
            reply = await self.engine.router.call(home, "validation_submit", timeout=self.timeout + 5, retry=False,
                                                  namespace=namespace, queue=queue, workflow_type=workflow_type, body=body)
        except Unreachable:
            if self.engine.router.is_local_queue("workflow", namespace, queue):
                return await self.submit(namespace, queue, workflow_type, body)
            raise ProtocolError(503, "update_validation_task_queue_unavailable",
                                "The node hosting this task queue is not reachable right now; retry shortly.",
                                retryable=True, retry_after_seconds=1) from None
        if "error" in reply:
            e = reply["error"]
            raise ProtocolError(e["status"], e["reason"], e["message"], **e.get("extra", {}))
        return dict(reply["outcome"])

    # --- the task queue's side (on the queue's home node) ---------------------------

    async def submit(self, namespace: str, queue: str, workflow_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Hold a validation task until a worker answers it or the caller's time is up."""
        await self._check_eligible(namespace, queue)
        now = self.engine.clock.now()
        self._prune(now)
        vid = run_ulid(self.engine.queue_home("workflow", namespace, queue), now)
        task = vt.ValidationTask(vid, namespace, queue, workflow_type, body, deadline=now + self.timeout)
        answered = trio.Event()
        self.tasks[vid] = task
        self._answered[vid] = answered
        q = self.engine.queue("workflow", namespace, queue)
        offer = Offer(body["run_id"], vid, workflow_type, needs=vt.NEED)

        def timed_out() -> ProtocolError:
            reason = "update_validation_execution_timeout" if task.claimed else "update_validation_task_not_claimed"
            return ProtocolError(504, reason, "No worker answered the update's validation in time; retry.", retryable=True,
                                 update_validation_task_id=vid)

        try:  # a caller is waiting: ahead of ordinary workflow tasks
            return await hold_until_answered(self.engine.clock, q, offer, task, answered, vt.expire_lease, timed_out, front=True)
        finally:
            if task.status in ("pending", "leased"):
                task.status = "timed_out"
            q.withdraw(vid)
            self._answered.pop(vid, None)
            self._finished[vid] = self.engine.clock.now()

    def _prune(self, now: float) -> None:
        for vid, at in list(self._finished.items()):
            if now - at > FINISHED_MEMORY_SECONDS:
                del self._finished[vid]
                self.tasks.pop(vid, None)

    async def _check_eligible(self, namespace: str, queue: str) -> None:
        if self.engine.owned is not None:
            await self.workers.load()
        now = self.engine.clock.now()
        for (ns, _), row in self.workers.workers.items():
            if ns == namespace and row.task_queue == queue and not self.workers.is_stale(row, now) \
                    and CAPABILITY in (row.info.get("capabilities") or []):
                return
        raise ProtocolError(409, "update_validator_worker_unavailable",
                            f"No live worker on task queue [{queue}] runs update validators; start one and retry.",
                            retryable=True, task_queue=queue)

    def claim(self, offer: Offer, owner: str) -> dict[str, Any] | None:
        """A multiplexed workflow poll took a validation offer (WorkerService's hook)."""
        task = self.tasks.get(offer.task_id)
        now = self.engine.clock.now()
        if task is None or task.status != "pending" or now >= task.deadline:
            return None
        return vt.claim(task, owner, now)

    def local_task(self, vid: str) -> None:
        shard = shard_of_run(vid) if len(vid) == 26 else None
        if shard is None or shard >= self.engine.shard_count:
            raise ProtocolError(404, "update_validation_task_not_found", f"Update validation task [{vid}] was not found.")
        if self.engine.owned is not None and shard not in self.engine.owned and vid not in self.tasks:
            raise ForwardTo(shard)

    def answer(self, namespace: str, vid: str, owner: str, attempt: int, failure: dict[str, Any] | None) -> dict[str, Any]:
        self.local_task(vid)
        task = self.tasks.get(vid)
        try:
            vt.guard(task, namespace, owner, attempt, self.engine.clock.now())
        except vt.ValidationTaskError as exc:
            raise ProtocolError(exc.status, exc.reason, exc.message, update_validation_task_id=vid) from None
        assert task is not None
        if failure is None:
            vt.approve(task)
        else:
            vt.reject(task, failure)
        event = self._answered.get(vid)
        if event is not None:
            event.set()
        return {"update_validation_task_id": vid, "update_validation_attempt": attempt,
                "outcome": "approved" if failure is None else "rejected", "reason": None}
