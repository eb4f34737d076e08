"""Queries answered by workers through ephemeral query tasks (control-plane §4.8, worker-plane §7).

Two nodes may take part. The run's owner builds the task (it holds the history) and waits
for the answer; the node hosting the task queue's home shard holds the task, hands it to a
polling worker and receives the worker's answer. On one node both are the same object;
in a cluster the owner submits through a signed RPC that stays open until the answer.
Nothing here touches the journal: a query never changes a run.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actors import messages as m
from actors import query_tasks as qt
from actors.task_queue import Offer
from persistence import avro
from persistence.ids import run_ulid, shard_of_run

from .engine import Engine
from .ephemeral_tasks import hold_until_answered
from .errors import ForwardTo, ProtocolError
from .router import Unreachable
from .workers import DRAINING, WorkerService
from .workflows import WorkflowService

log = logging.getLogger("dw.queries")

FINISHED_MEMORY_SECONDS = 120.0  # late answers get "not leased" rather than "not found" for this long


class QueryService:
    def __init__(
        self, engine: Engine, workflows: WorkflowService, workers: WorkerService, *, timeout: float, max_pending: int = 1024
    ) -> None:
        self.engine = engine
        self.workflows = workflows
        self.workers = workers
        self.timeout = timeout
        self.max_pending = max_pending
        self.tasks: dict[str, qt.QueryTask] = {}
        self._answered: dict[str, trio.Event] = {}
        self._finished: dict[str, float] = {}

    # --- the caller's side (on the run's owner) -------------------------------------

    async def query(
        self, namespace: str, workflow_id: str, name: str, arguments: Any, run_id: str | None
    ) -> tuple[int, dict[str, Any]]:
        run = await self.workflows._target(namespace, workflow_id, run_id)
        base = {"workflow_id": workflow_id, "run_id": run.run_id, "target_scope": "run" if run_id else "instance", "query_name": name}
        if not run.is_open:
            raise ProtocolError(
                409,
                "run_not_active",
                f"The workflow run is {run.status}; queries are answered by workers replaying open runs. "
                "Read the run's result or history instead.",
                **base,
            )
        queue = run.task_queue or "default"
        history = await self.engine.ask(run.run_id, m.ReadHistory(after=0))
        body = {
            "workflow_id": workflow_id,
            "run_id": run.run_id,
            "workflow_type": run.workflow_type,
            "query_name": name,
            "payload_codec": "avro",
            "workflow_arguments": run.arguments,
            "query_arguments": arguments if arguments is not None else avro.envelope([]),
            "run_status": history.status,
            "last_history_sequence": history.visible,
            "history_events": history.events,
        }
        if run.meta.get("compatibility"):
            body["compatibility"] = run.meta["compatibility"]
        outcome = await self._submit_at_home(namespace, queue, run.workflow_type, body)
        if "result_envelope" in outcome:
            return 200, {**base, "result": outcome["result"], "result_envelope": outcome["result_envelope"], "reason": None}
        reason = outcome["reason"]
        failure = {**base, "result": None, "reason": reason, "message": outcome.get("message") or "The worker rejected the query."}
        if outcome.get("validation_errors"):
            failure["validation_errors"] = outcome["validation_errors"]
        return (404 if reason == "rejected_unknown_query" else 409), failure

    async def _submit_at_home(self, namespace: str, queue: str, workflow_type: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.engine.router.is_local_queue("query", namespace, queue):
            return await self.submit(namespace, queue, workflow_type, body)
        home = self.engine.queue_home("query", namespace, queue)
        try:
            # the call stays open until a worker answers: it is sent once, never retried
            reply = await self.engine.router.call(
                home, "query_submit", timeout=self.timeout + 5, retry=False,
                namespace=namespace, queue=queue, workflow_type=workflow_type, body=body,
            )
        except Unreachable:
            if self.engine.router.is_local_queue("query", namespace, queue):
                return await self.submit(namespace, queue, workflow_type, body)  # it became ours meanwhile
            log.warning("query for %s: the node hosting task queue %s did not answer", body["workflow_id"], queue)
            raise ProtocolError(
                503, "query_task_queue_unavailable",
                "The node hosting this task queue is not reachable right now (the cluster is rebalancing); retry shortly.",
                retryable=True, retry_after_seconds=1,
            ) from None
        if "error" in reply:
            e = reply["error"]
            raise ProtocolError(e["status"], e["reason"], e["message"], **e.get("extra", {}))
        return reply["outcome"]

    # --- the task queue's side (on the queue's home node) ---------------------------

    async def submit(self, namespace: str, queue: str, workflow_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Hold a query task until a worker answers it or the caller's time is up."""
        await self._check_eligible(namespace, queue, workflow_type)
        now = self.engine.clock.now()
        self._prune(now)
        pending = sum(1 for t in self.tasks.values() if t.namespace == namespace and t.queue == queue and t.status in ("pending", "leased"))
        if pending >= self.max_pending:
            raise ProtocolError(
                429, "query_task_queue_full",
                f"Task queue [{queue}] already holds {pending} pending queries; retry after some are answered.",
                task_queue=queue, max_pending=self.max_pending,
            )
        qid = run_ulid(self.engine.queue_home("query", namespace, queue), now)
        task = qt.QueryTask(qid, namespace, queue, workflow_type, body, deadline=now + self.timeout, admitted_at=now)
        answered = trio.Event()
        self.tasks[qid] = task
        self._answered[qid] = answered
        q = self.engine.queue("query", namespace, queue)
        offer = Offer(body["run_id"], qid, workflow_type, build=body.get("compatibility"))  # pinned runs: their build answers

        def timed_out() -> ProtocolError:
            log.info("query %s on %s/%s timed out (attempt %d)", body["query_name"], namespace, body["workflow_id"], task.attempt)
            return ProtocolError(504, "query_worker_timeout", "Timed out waiting for a worker to execute the workflow query.",
                                 query_task_id=qid)

        try:
            return await hold_until_answered(self.engine.clock, q, offer, task, answered, qt.expire_lease, timed_out)
        finally:
            if task.status in ("pending", "leased"):
                task.status = "timed_out"
            q.withdraw(qid)
            self._answered.pop(qid, None)
            self._finished[qid] = self.engine.clock.now()

    def _prune(self, now: float) -> None:
        for qid, at in list(self._finished.items()):
            if now - at > FINISHED_MEMORY_SECONDS:
                del self._finished[qid]
                self.tasks.pop(qid, None)

    async def _check_eligible(self, namespace: str, queue: str, workflow_type: str) -> None:
        if self._eligible(namespace, queue, workflow_type):
            return
        if self.engine.owned is not None:
            await self.workers.load()  # registered through another node of the cluster
            if self._eligible(namespace, queue, workflow_type):
                return
        raise ProtocolError(
            409, "query_worker_unavailable",
            f"No active worker on task queue [{queue}] can answer queries for workflow type [{workflow_type}]. "
            "Start a worker for it (workers must poll within the last "
            f"{int(self.workers.stale_after)} s).",
            task_queue=queue, workflow_type=workflow_type,
        )

    def _eligible(self, namespace: str, queue: str, workflow_type: str) -> bool:
        now = self.engine.clock.now()
        for (ns, _), w in self.workers.workers.items():
            if ns != namespace or w.task_queue != queue or w.runtime == "php" or self.workers.is_stale(w, now):
                continue
            types = w.info.get("supported_workflow_types") or []
            caps = w.info.get("capabilities") or []
            if (not types or workflow_type in types) and (not caps or "query_tasks" in caps):
                return True
        return False

    async def poll(self, namespace: str, body: dict[str, Any], hold: float) -> dict[str, Any] | None:
        row = await self.workers.registration(namespace, body["worker_id"], body["task_queue"], body.get("build_id"))
        if await self.workers.held_draining(namespace, row, hold):
            return DRAINING
        types = set(row.info.get("supported_workflow_types") or [])
        q = self.engine.queue("query", namespace, row.task_queue)
        end = trio.current_time() + hold
        while True:
            offer = await q.take(lambda name: not types or name in types, end - trio.current_time(), self.engine.draining,
                                 build=row.info.get("build_id") or None)
            if offer is None:
                return None
            task = self.tasks.get(offer.task_id)
            now = self.engine.clock.now()
            if task is not None and task.status == "pending" and now < task.deadline:
                return qt.claim(task, row.worker_id, now)

    def local_task(self, qid: str) -> None:
        """Answers go to the node holding the task: its id carries the queue's home shard."""
        shard = shard_of_run(qid) if len(qid) == 26 else None
        if shard is None or shard >= self.engine.shard_count:
            raise ProtocolError(404, "query_task_not_found", f"Query task [{qid}] was not found.", query_task_id=qid)
        if self.engine.owned is not None and shard not in self.engine.owned and qid not in self.tasks:
            raise ForwardTo(shard)

    def status(self, namespace: str, qid: str, owner: str, attempt: int) -> dict[str, Any]:
        self.local_task(qid)
        try:
            return qt.status(self.tasks.get(qid), namespace, owner, attempt, self.engine.clock.now())
        except qt.QueryTaskError as exc:
            raise ProtocolError(exc.status, exc.reason, exc.message, query_task_id=qid) from None

    def answer(self, namespace: str, qid: str, owner: str, attempt: int, outcome: dict[str, Any]) -> dict[str, Any]:
        self.local_task(qid)
        task = self.tasks.get(qid)
        try:
            qt.guard(task, namespace, owner, attempt, self.engine.clock.now())
        except qt.QueryTaskError as exc:
            raise ProtocolError(exc.status, exc.reason, exc.message, query_task_id=qid) from None
        assert task is not None
        if "failure" in outcome:
            reason: str | None = qt.fail(task, outcome["failure"])
            result = "failed"
        else:
            qt.complete(task, outcome.get("result"), outcome.get("result_envelope"))
            reason, result = None, "completed"
        event = self._answered.get(qid)
        if event is not None:
            event.set()
        return {"query_task_id": qid, "query_task_attempt": attempt, "outcome": result, "reason": reason}
