"""Worker-plane routes: registration, long polls, task outcomes."""

from __future__ import annotations

from typing import Any

from actors import messages as m
from persistence.ids import iso, ulid
from persistence.vocabulary import decode_offset, run_of_task
from runtime.errors import ProtocolError
from runtime.workers import DRAINING

from . import openapi, schemas
from .endpoints import Api, Ctx
from .envelope import Route

WORKER = ("worker",)
W = Route("worker")


def run_of(task_id: str) -> str:
    """Task ids start with their run id; anything else is unknown to this server."""
    run_id = run_of_task(task_id)
    if run_id is None:
        raise ProtocolError(404, "task_not_found", f"Task [{task_id}] was not found.", task_id=task_id)
    return run_id


def _hold(cfg: Any, requested: Any) -> float:
    if requested is None:
        return float(cfg.poll_timeout)
    return float(min(max(requested, 0), cfg.max_poll_timeout))


def _admit_poll(api: Api, kind: str, namespace: str, queue: str) -> None:
    """Parked polls per queue are bounded; past it the SDK backs off for the advertised time."""
    limit = api.cfg.max_parked_polls_per_queue
    if len(api.node.engine.queue(kind, namespace, queue).waiters) >= limit:
        raise ProtocolError(
            429, "long_poll_capacity_exhausted",
            f"Task queue [{queue}] already holds {limit} parked {kind}-task polls; retry after the advertised delay.",
            poll_status="long_poll_capacity_exhausted", task=None, task_kind=f"{kind}_task", task_queue=queue,
            retryable=True, retry_after_seconds=1, limit=limit,
        )


async def _ask(api: Api, task_id: str, message: m.Message) -> Any:
    """A message to the actor of the run the task id names."""
    return await api.node.engine.ask(run_of(task_id), message)


def register(api: Api) -> None:
    """Every worker-plane route, in the order of the OpenAPI document."""
    _register_workers(api)
    _register_sessions(api)
    _register_polls(api)
    _register_query_tasks(api)
    _register_validation_tasks(api)
    _register_workflow_tasks(api)
    _register_prepared_local_activities(api)
    _register_activity_tasks(api)


def _register_workers(api: Api) -> None:
    """A worker registers, heartbeats and deregisters."""
    node = api.node

    @api.endpoint("/api/worker/register", "POST", W, WORKER)
    async def register_worker(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.RegisterWorker, ctx.body)
        body = req.model_dump()
        body["worker_id"] = body.get("worker_id") or ulid()
        return 201, await node.workers.register(ctx.namespace, body)

    @api.endpoint("/api/worker/heartbeat", "POST", W, WORKER)
    async def heartbeat(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.WorkerHeartbeat, ctx.body)
        return 200, node.workers.heartbeat(ctx.namespace, req.model_dump())

    @api.endpoint("/api/worker/registrations/<worker_id>", "DELETE", W, WORKER)
    async def deregister(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await node.workers.deregister(ctx.namespace, ctx.args["worker_id"])

    @api.endpoint("/api/worker/registrations/<worker_id>/deregister", "POST", W, WORKER)
    async def deregister_fenced(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.FencedDeregistration, ctx.body)
        return 200, await node.workers.deregister_fenced(ctx.namespace, ctx.args["worker_id"], req.registration_token)


def _register_sessions(api: Api) -> None:
    """Worker sessions (extended spec §11.1), answered by the home node of the worker's queue."""
    node = api.node
    engine = node.engine

    async def holder(ctx: Ctx, worker_id: str) -> Any:
        row = node.workers.workers.get((ctx.namespace, worker_id))
        if row is None:
            await node.workers.load()
            row = node.workers.workers.get((ctx.namespace, worker_id))
        if row is None:
            raise ProtocolError(412, "worker_not_registered", f"Worker [{worker_id}] must register before it holds sessions.",
                                worker_id=worker_id, admitted=False, session=None)
        engine.router.require_queue_here("activity", ctx.namespace, row.task_queue)
        return row

    @api.endpoint("/api/worker/sessions", "POST", W, WORKER)
    async def create_session(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.WorkerSessionRequest, ctx.body)
        row = await holder(ctx, req.worker_id)
        reply = await node.sessions.create(ctx.namespace, row, req.model_dump(exclude={"worker_id"}, exclude_none=True))
        return reply["status"], reply

    @api.endpoint("/api/worker/sessions/<session_id>/heartbeat", "POST", W, WORKER)
    async def heartbeat_session(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.WorkerSessionHeartbeat, ctx.body)
        await holder(ctx, req.worker_id)
        return 200, await node.sessions.heartbeat(ctx.namespace, ctx.args["session_id"], req.worker_id, req.lease_seconds)

    @api.endpoint("/api/worker/sessions/<session_id>", "DELETE", W, WORKER)
    async def close_session(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.WorkerSessionClose, ctx.body)
        await holder(ctx, req.worker_id)
        return 200, await node.sessions.close(ctx.namespace, ctx.args["session_id"], req.worker_id, req.reason)


def _register_polls(api: Api) -> None:
    """The long polls for workflow, activity and query tasks."""
    node = api.node
    engine = node.engine
    cfg = api.cfg

    for kind in ("workflow", "activity"):

        async def poll(ctx: Ctx, kind: str = kind) -> tuple[int, dict[str, Any]]:
            req = schemas.parse(schemas.Poll, ctx.body)
            engine.router.require_queue_here(kind, ctx.namespace, req.task_queue)
            _admit_poll(api, kind, ctx.namespace, req.task_queue)
            task = await node.workers.poll(
                kind, ctx.namespace, req.model_dump(), _hold(cfg, req.timeout_seconds), rerouted=await api.rerouted(ctx.request)
            )
            if task is None:
                return 200, {"task": None, "poll_status": "empty"}
            if task is DRAINING:
                return 200, {"task": None, "poll_status": "draining"}
            # server_time: the instant the claim's lease is measured from (extended §11.3)
            return 200, {"task": task, "poll_status": "leased", "server_time": iso(engine.clock.now())}

        poll.__name__ = f"poll_{kind}"
        api.endpoint(f"/api/worker/{kind}-tasks/poll", "POST", W, WORKER)(poll)

    @api.endpoint("/api/worker/query-tasks/poll", "POST", W, WORKER)
    async def poll_query(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.Poll, ctx.body)
        engine.router.require_queue_here("query", ctx.namespace, req.task_queue)
        _admit_poll(api, "query", ctx.namespace, req.task_queue)
        task = await node.queries.poll(ctx.namespace, req.model_dump(), _hold(cfg, req.timeout_seconds))
        if task is DRAINING:
            return 200, {"task": None, "poll_status": "draining"}
        return 200, {"task": task, "poll_status": "leased" if task else "empty"}


def _register_query_tasks(api: Api) -> None:
    """A worker answers a query task: its result or its failure."""
    node = api.node

    @api.endpoint("/api/worker/query-tasks/<query_task_id>/complete", "POST", W, WORKER)
    async def complete_query(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.CompleteQueryTask, ctx.body)
        outcome = {"result": req.result, "result_envelope": req.result_envelope}
        qid = ctx.args["query_task_id"]
        return 200, node.queries.answer(ctx.namespace, qid, req.lease_owner, req.query_task_attempt, outcome)

    @api.endpoint("/api/worker/query-tasks/<query_task_id>/fail", "POST", W, WORKER)
    async def fail_query(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.FailQueryTask, ctx.body)
        outcome = {"failure": req.failure.model_dump()}
        qid = ctx.args["query_task_id"]
        return 200, node.queries.answer(ctx.namespace, qid, req.lease_owner, req.query_task_attempt, outcome)


    @api.endpoint("/api/worker/query-tasks/<query_task_id>/status", "GET", W, WORKER)
    async def query_task_status(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        errors: dict[str, list[str]] = {}
        owner = ctx.query.get("lease_owner") or ""
        if not owner or len(owner) > 255:
            errors["lease_owner"] = ["The lease_owner field is required (1-255 characters)."]
        attempt = schemas.int_arg(ctx.query, "query_task_attempt", 0, 1, 2**31, errors)
        if "query_task_attempt" not in ctx.query:
            errors["query_task_attempt"] = ["The query_task_attempt field is required."]
        if errors:
            raise schemas.invalid(errors)
        return 200, node.queries.status(ctx.namespace, ctx.args["query_task_id"], owner, attempt)

    openapi.query_params(query_task_status, query_task_attempt=(1, 2**31))


def _register_validation_tasks(api: Api) -> None:
    """A worker's verdict on an update validation task (extended spec §4.2)."""
    node = api.node

    @api.endpoint("/api/worker/update-validation-tasks/<task_id>/approve", "POST", W, WORKER)
    async def approve_validation(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.ValidationVerdict, ctx.body)
        return 200, node.validation.answer(ctx.namespace, ctx.args["task_id"], req.lease_owner, req.update_validation_attempt, None)

    @api.endpoint("/api/worker/update-validation-tasks/<task_id>/reject", "POST", W, WORKER)
    async def reject_validation(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.RejectValidation, ctx.body)
        return 200, node.validation.answer(
            ctx.namespace, ctx.args["task_id"], req.lease_owner, req.update_validation_attempt, req.failure.model_dump(),
        )


def _register_workflow_tasks(api: Api) -> None:
    """A leased workflow task: its history pages, heartbeat, completion with commands, failure."""
    node, cfg = api.node, api.cfg

    @api.endpoint("/api/worker/workflow-tasks/<task_id>/history", "POST", W, WORKER)
    async def wt_history(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.WorkflowTaskHistory, ctx.body)
        try:
            after = decode_offset(req.next_history_page_token)
        except ValueError:
            raise ProtocolError(400, "invalid_page_token", "The next_history_page_token could not be decoded.") from None
        task_id = ctx.args["task_id"]
        return 200, await _ask(api, task_id, m.WorkflowTaskHistory(
            namespace=ctx.namespace, task_id=task_id, owner=req.lease_owner, attempt=req.workflow_task_attempt,
            after=after, page_size=req.history_page_size or 500,
        ))

    @api.endpoint("/api/worker/workflow-tasks/<task_id>/heartbeat", "POST", W, WORKER)
    async def wt_heartbeat(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.TaskLease, ctx.body)
        task_id = ctx.args["task_id"]
        return 200, await _ask(api, task_id, m.WorkflowTaskHeartbeat(
            namespace=ctx.namespace, task_id=task_id, owner=req.lease_owner, attempt=req.workflow_task_attempt,
        ))

    @api.endpoint("/api/worker/workflow-tasks/<task_id>/complete", "POST", W, WORKER)
    async def wt_complete(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.CompleteWorkflowTask, ctx.body)
        task_id = ctx.args["task_id"]
        sticky = None
        claim = req.sticky_cache
        if claim is not None and await node.workers.has_capability(ctx.namespace, req.lease_owner, "sticky_execution"):
            sticky = {"worker_id": claim.worker_id, "workflow_id": claim.workflow_id, "run_id": claim.run_id,
                      "ttl": min(claim.ttl_seconds, cfg.sticky_ttl_seconds)}
            node.workers.note_sticky_metrics(ctx.namespace, claim.worker_id, claim.metrics)
        return 200, await _ask(api, task_id, m.CompleteWorkflowTask(
            namespace=ctx.namespace, task_id=task_id, owner=req.lease_owner, attempt=req.workflow_task_attempt,
            commands=req.commands, sticky=sticky, cursors=req.message_stream_cursors,
        ))

    @api.endpoint("/api/worker/workflow-tasks/<task_id>/deliver-cancellation", "POST", W, WORKER)
    async def wt_deliver_cancellation(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.DeliverCancellation, ctx.body)
        task_id = ctx.args["task_id"]
        return 200, await _ask(api, task_id, m.ClaimOp(
            namespace=ctx.namespace, op="deliver_cancellation", task_id=task_id, owner=req.lease_owner,
            attempt=req.workflow_task_attempt, body=ctx.body,
        ))

    @api.endpoint("/api/worker/workflow-tasks/<task_id>/fail", "POST", W, WORKER)
    async def wt_fail(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.FailWorkflowTask, ctx.body)
        task_id = ctx.args["task_id"]
        return 200, await _ask(api, task_id, m.FailWorkflowTask(
            namespace=ctx.namespace, task_id=task_id, owner=req.lease_owner, attempt=req.workflow_task_attempt,
            failure=req.failure.model_dump(),
        ))


def _register_prepared_local_activities(api: Api) -> None:
    """Prepared local activities (extended spec §2.2): admission, checkpoints and the attempt's
    control, heartbeat, outcome and stop, all bound to the workflow task's claim."""
    prefix = "/api/worker/workflow-tasks/<task_id>/local-activities"

    async def claim_op(ctx: Ctx, op: str, lease: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        task_id = ctx.args["task_id"]
        return 200, await _ask(api, task_id, m.ClaimOp(
            namespace=ctx.namespace, op=op, task_id=task_id, owner=lease.lease_owner, attempt=lease.workflow_task_attempt, body=body,
        ))

    @api.endpoint(f"{prefix}/prepare", "POST", W, WORKER)
    async def local_prepare(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.PrepareLocalActivity, ctx.body)
        return await claim_op(ctx, "local_prepare", req, req.model_dump())

    @api.endpoint(f"{prefix}/recover", "POST", W, WORKER)
    async def local_recover(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.RecoverLocalActivity, ctx.body)
        return await claim_op(ctx, "local_recover", req, req.model_dump())

    for name, op in (("checkpoint", "local_checkpoint"), ("checkpoint-group", "local_checkpoint_group")):

        async def local_checkpoint(ctx: Ctx, op: str = op) -> tuple[int, dict[str, Any]]:
            req = schemas.parse(schemas.CheckpointLocalActivities, ctx.body)
            return await claim_op(ctx, op, req, req.model_dump())

        local_checkpoint.__name__ = op
        api.endpoint(f"{prefix}/{name}", "POST", W, WORKER)(local_checkpoint)

    @api.endpoint(f"{prefix}/<attempt_id>/control", "POST", W, WORKER)
    async def local_control(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.LocalActivityControl, ctx.body)
        return await claim_op(ctx, "local_control", req, {"activity_attempt_id": ctx.args["attempt_id"]})

    @api.endpoint(f"{prefix}/<attempt_id>/heartbeat", "POST", W, WORKER)
    async def local_heartbeat(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.LocalActivityHeartbeat, ctx.body)
        return await claim_op(ctx, "local_heartbeat", req, {"activity_attempt_id": ctx.args["attempt_id"], "progress": req.progress})

    @api.endpoint(f"{prefix}/<attempt_id>/outcome", "POST", W, WORKER)
    async def local_outcome(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.LocalActivityOutcome, ctx.body)
        return await claim_op(ctx, "local_outcome", req, {"activity_attempt_id": ctx.args["attempt_id"], "report": req.report})

    @api.endpoint(f"{prefix}/<attempt_id>/acknowledge-cancellation", "POST", W, WORKER)
    async def local_acknowledge(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.LocalActivityAcknowledge, ctx.body)
        return await claim_op(ctx, "local_acknowledge", req, {"activity_attempt_id": ctx.args["attempt_id"], "request_id": req.request_id})


def _register_activity_tasks(api: Api) -> None:
    """A leased activity attempt: completion, failure, heartbeat with progress."""

    @api.endpoint("/api/worker/activity-tasks/<task_id>/complete", "POST", W, WORKER)
    async def act_complete(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.CompleteActivity, ctx.body)
        task_id = ctx.args["task_id"]
        return 200, await _ask(api, task_id, m.CompleteActivity(
            namespace=ctx.namespace, task_id=task_id, attempt_id=req.activity_attempt_id, owner=req.lease_owner, result=req.result,
        ))

    @api.endpoint("/api/worker/activity-tasks/<task_id>/fail", "POST", W, WORKER)
    async def act_fail(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.FailActivity, ctx.body)
        task_id = ctx.args["task_id"]
        return 200, await _ask(api, task_id, m.FailActivity(
            namespace=ctx.namespace, task_id=task_id, attempt_id=req.activity_attempt_id, owner=req.lease_owner,
            failure=req.failure.model_dump(),
        ))

    # Observing a claim (extended §5.6) and keeping it (§11.3): the attempt's identity only.
    for op, verb in (("status", "status"), ("renew_lease", "renew-lease")):

        async def observe(ctx: Ctx, op: str = op) -> tuple[int, dict[str, Any]]:
            req = schemas.parse(schemas.AttemptLease, ctx.body)
            task_id = ctx.args["task_id"]
            return 200, await _ask(api, task_id, m.ActivityOp(
                namespace=ctx.namespace, op=op, task_id=task_id, attempt_id=req.activity_attempt_id, owner=req.lease_owner,
            ))

        observe.__name__ = f"act_{op}"
        api.endpoint(f"/api/worker/activity-tasks/<task_id>/{verb}", "POST", W, WORKER)(observe)

    @api.endpoint("/api/worker/activity-tasks/<task_id>/acknowledge-cancellation", "POST", W, WORKER)
    async def act_acknowledge_cancellation(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.AcknowledgeCancellation, ctx.body)
        task_id = ctx.args["task_id"]
        return 200, await _ask(api, task_id, m.ActivityOp(
            namespace=ctx.namespace, op="acknowledge_cancellation", task_id=task_id, attempt_id=req.activity_attempt_id,
            owner=req.lease_owner, body={"request_id": req.request_id},
        ))

    @api.endpoint("/api/worker/activity-tasks/<task_id>/heartbeat", "POST", W, WORKER)
    async def act_heartbeat(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.ActivityHeartbeat, ctx.body)
        task_id = ctx.args["task_id"]
        progress = {k: v for k, v in req.model_dump().items() if k in ("message", "current", "total", "unit", "details") and v is not None}
        return 200, await _ask(api, task_id, m.ActivityHeartbeat(
            namespace=ctx.namespace, task_id=task_id, attempt_id=req.activity_attempt_id, owner=req.lease_owner, progress=progress,
        ))
