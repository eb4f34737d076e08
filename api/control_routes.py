"""Control-plane routes: health, discovery, namespaces and the workflow run lifecycle."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from actors import message_streams, tracing
from actors.limits import search_attribute_problem
from persistence import avro
from persistence.ids import iso
from persistence.journal import Predicate, StoreUnavailable
from runtime import page_tokens
from runtime.errors import ProtocolError, validation
from runtime.membership import cluster_view
from runtime.payload_storage import transport_manifest

from . import schemas, views
from .endpoints import Api, Ctx
from .envelope import Route
from .manifest import cluster_info

ANY_ROLE = ("worker", "operator", "admin")
OPERATOR = ("operator", "admin")
ADMIN = ("admin",)
OPEN = Route("open")


def _op(operation: str) -> Route:
    return Route("control", operation)


def _name(name: str, field: str, limit: int = 256) -> str:
    if not name or len(name.encode()) > limit or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise validation(field, f"The {field} must be 1-{limit} bytes without control characters.")
    return name


_input = schemas.encode_input


def register(api: Api) -> None:
    """Every control-plane route of this module, in the order of the OpenAPI document."""
    _register_discovery(api)
    _register_namespaces(api)
    _register_visibility(api)
    _register_runs(api)
    for prefix, scoped in (("/api/workflows/<workflow_id>", False), ("/api/workflows/<workflow_id>/runs/<run_id>", True)):
        _register_commands(api, prefix, scoped)


def _register_discovery(api: Api) -> None:
    """Health, readiness and cluster info: what a client or load balancer asks first."""
    node = api.node
    cfg = api.cfg

    @api.endpoint("/api/health", "GET", OPEN, (), auth=False, version=False, namespace=False)
    async def health(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        ok = await node.journal.ping()
        body = {
            "status": "serving" if ok else "degraded",
            "timestamp": iso(node.clock.now()),
            "checks": {"database": "ok" if ok else "unavailable"},
        }
        return (200 if ok else 503), body

    @api.endpoint("/api/ready", "GET", OPEN, (), auth=False, version=False, namespace=False)
    async def ready(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        ok = await node.journal.ping()
        has_default = node.namespaces.exists(cfg.default_namespace)
        auth_ok = api.auth.configured()
        checks = {
            "database": {"status": "ok" if ok else "unavailable"},
            "migrations": {"status": "ok"},
            "default_namespace": {"status": "ok" if has_default else "missing", "namespace": cfg.default_namespace},
            "auth": {"status": "ok" if auth_ok else "missing", "driver": cfg.auth_driver},
        }
        good = ok and has_default and auth_ok and not node.engine.draining.is_set()
        return (200 if good else 503), {"status": "ready" if good else "not_ready", "timestamp": iso(node.clock.now()), "checks": checks}

    @api.endpoint("/api/cluster/info", "GET", Route("control", bare_success=True), ANY_ROLE, version=False, namespace=False)
    async def info(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        now = node.clock.now()
        workers = [
            w for (ns, _), w in node.workers.workers.items() if ns == ctx.namespace and not node.workers.is_stale(w, now)
        ]
        fleet = {
            "namespace": ctx.namespace,
            "active_workers": len(workers),
            "active_worker_scopes": len({w.task_queue for w in workers}),
            "queues": sorted({w.task_queue for w in workers}),
            "build_ids": [],
            "workers": [
                {"worker_id": w.worker_id, "queues": [w.task_queue], "build_ids": [], "recorded_at": iso(w.last_seen),
                 "expires_at": iso(w.last_seen + node.workers.stale_after)}
                for w in workers
            ],
        }
        body = cluster_info(cfg, fleet)
        # the request's namespace and its payload storage policy (extended §13.1; no runtime transport)
        body["namespace"] = {"name": ctx.namespace, "external_payload_storage": transport_manifest(node.payloads.policy(ctx.namespace), cfg.max_payload_bytes)}
        body["task_repair"] = {k: v for k, v in node.system.repair_status().items() if k in ("policy", "candidates", "background_pass")}
        body["actors"] = {"live": len(node.engine.actors)}  # 0 once every run here has passivated (tests wait on it)
        try:
            body["cluster"] = await cluster_view(
                node.journal, node_id=cfg.node_id, shard_count=cfg.shard_count, clustered=bool(cfg.database), now=now
            )
        except StoreUnavailable:  # workers read the capabilities above even while the database is away
            body["cluster"] = {"mode": "cluster", "node_id": cfg.node_id, "shard_count": cfg.shard_count, "status": "database_unavailable"}
        return 200, body


def _register_namespaces(api: Api) -> None:
    """Namespaces and their retention (admin passes)."""
    node = api.node

    @api.endpoint("/api/namespaces", "GET", Route("control"), OPERATOR, namespace=False)
    async def list_namespaces(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, {"namespaces": [node.namespaces.view(r) for r in node.namespaces.rows.values()]}

    @api.endpoint("/api/namespaces", "POST", Route("control"), ADMIN, namespace=False)
    async def create_namespace(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.CreateNamespace, ctx.body)
        row = await node.namespaces.create(req.model_dump())
        return 201, node.namespaces.view(row)

    @api.endpoint("/api/namespaces/<name>", "GET", Route("control"), OPERATOR, namespace=False)
    async def get_namespace(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, node.namespaces.view(node.namespaces.get(ctx.args["name"]))

    @api.endpoint("/api/namespaces/<name>", "PUT", Route("control"), ADMIN, namespace=False)
    async def update_namespace(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        node.namespaces.get(ctx.args["name"])
        req = schemas.parse(schemas.UpdateNamespace, ctx.body)
        row = await node.namespaces.update(ctx.args["name"], req.model_dump())
        return 200, node.namespaces.view(row)

    @api.endpoint("/api/namespaces/<name>/external-storage", "PUT", Route("control"), ADMIN, namespace=False)
    async def set_external_storage(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        row = node.namespaces.get(ctx.args["name"])
        req = schemas.parse(schemas.ExternalStoragePolicy, ctx.body)
        policy = req.model_dump(exclude_none=True)
        policy["config"] = {k: v for k, v in (policy.get("config") or {}).items() if v not in (None, "")}
        if not policy["config"]:
            del policy["config"]
        await node.payloads.set_policy(row.name, policy)
        return 200, node.namespaces.view(row)

    @api.endpoint("/api/storage/test", "POST", Route("control"), ADMIN)
    async def test_external_storage(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.StorageTest, ctx.body if ctx.body is not None else {})
        return 200, await node.payloads.probe(ctx.namespace, req.driver, req.small_payload_bytes, req.large_payload_bytes)

    @api.endpoint("/api/namespaces/<name>", "DELETE", Route("control"), ADMIN, namespace=False)
    async def delete_namespace(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        out = await node.namespaces.delete(ctx.args["name"])
        node.workflows.forget_namespace(out["name"])
        node.workers.forget_namespace(out["name"])
        node.payloads.forget_namespace(out["name"])
        await node.search_attributes.load()
        node.schedules.drop_namespace(out["name"])
        return 200, out

    @api.endpoint("/api/system/retention", "GET", Route("control"), ADMIN)
    async def retention_status(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        try:
            limit = max(1, min(int(ctx.query.get("limit") or 100), 1000))
        except ValueError:
            raise schemas.invalid({"limit": ["The limit must be a positive integer."]}) from None
        return 200, await node.retention.status(ctx.namespace, limit)

    @api.endpoint("/api/system/retention/pass", "POST", Route("control"), ADMIN)
    async def retention_pass(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.RetentionPass, ctx.body)
        out = await node.retention.run_pass(ctx.namespace, req.run_ids, req.limit or 100)
        return (207 if out["failed"] else 200), out


def _register_visibility(api: Api) -> None:
    """Listing workflows and the search attributes a list can filter on."""
    node = api.node

    @api.endpoint("/api/workflows", "GET", _op("list"), OPERATOR)
    async def list_workflows(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        q = ctx.query
        errors: dict[str, list[str]] = {}
        status = q.get("status") or None
        if status is not None and status not in ("running", "completed", "failed"):
            errors["status"] = [f"The status filter [{status}] is not supported; use running, completed or failed."]
        size = page_tokens.page_size(q, errors)
        time_filters = []
        for param, column, op in (
            ("started_after", "started_at", ">="), ("started_before", "started_at", "<"),
            ("closed_after", "closed_at", ">="), ("closed_before", "closed_at", "<"),
        ):
            if q.get(param):
                try:
                    when = datetime.fromisoformat(q[param].replace("Z", "+00:00"))
                    if when.tzinfo is None:
                        raise ValueError
                except ValueError:
                    errors[param] = [f"The {param} filter must be an ISO-8601 time with a zone, e.g. 2026-01-01T00:00:00Z."]
                    continue
                time_filters.append(Predicate(column=column, op=op, value=when.timestamp(), type="datetime"))
        if errors:
            raise schemas.invalid(errors)
        args = {
            "workflow_type": q.get("workflow_type") or None,
            "status": status,
            "query": (q.get("query") or "").strip() or None,
            "page_size": size,
            "next_page_token": q.get("next_page_token"),
            "time_filters": time_filters,
            "time_key": [q.get(k) for k in ("started_after", "started_before", "closed_after", "closed_before")],
        }
        return 200, views.run_page(await node.workflows.list(ctx.namespace, args))

    # --- search attributes -------------------------------------------------------------

    @api.endpoint("/api/search-attributes", "GET", Route("control"), OPERATOR)
    async def list_search_attributes(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        await node.search_attributes.load()
        return 200, node.search_attributes.view(ctx.namespace)

    @api.endpoint("/api/search-attributes", "POST", Route("control"), OPERATOR)
    async def create_search_attribute(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 201, await node.search_attributes.create(ctx.namespace, ctx.body)

    @api.endpoint("/api/search-attributes/<name>", "DELETE", Route("control"), OPERATOR)
    async def delete_search_attribute(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, await node.search_attributes.delete(ctx.namespace, ctx.args["name"])


def _register_runs(api: Api) -> None:
    """Starting a workflow and reading its runs: description, history, export bundle."""
    node = api.node
    cfg = api.cfg

    @api.endpoint("/api/workflows", "POST", _op("start"), OPERATOR)
    async def start(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        if isinstance(ctx.body, dict):
            forbidden = {k: [m] for k, m in schemas.FORBIDDEN_START_KEYS.items() if k in ctx.body}
            if forbidden:
                raise schemas.invalid(forbidden)
        req = schemas.parse(schemas.StartWorkflow, ctx.body)
        if req.memo is not None and schemas.json_size(req.memo) > cfg.max_memo_bytes:
            raise ProtocolError(
                422, "memo_too_large", f"The memo must be at most {cfg.max_memo_bytes} bytes of JSON.",
                errors={"memo": ["The memo is too large."]}, validation_errors={"memo": ["The memo is too large."]},
            )
        problem = search_attribute_problem(req.search_attributes or {}, cfg.limits)
        if problem is not None:
            raise validation(problem[0], problem[1])
        body = req.model_dump()
        body["input"] = _input(body.get("input"))
        body["trace"] = tracing.carrier(ctx.body.get("observability_context"))  # a malformed one is dropped
        if body.get("workflow_id") is None:
            body.pop("workflow_id")
        return views.started(await node.workflows.start(ctx.namespace, body))

    @api.endpoint("/api/workflows/<workflow_id>", "GET", _op("describe"), OPERATOR)
    async def describe(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, views.described(await node.workflows.describe(ctx.namespace, ctx.args["workflow_id"]))

    @api.endpoint("/api/workflows/<workflow_id>/runs", "GET", _op("list_runs"), OPERATOR)
    async def list_runs(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, views.instance_runs(await node.workflows.list_runs(ctx.namespace, ctx.args["workflow_id"]))

    @api.endpoint("/api/workflows/<workflow_id>/runs/<run_id>", "GET", _op("describe_run"), OPERATOR)
    async def describe_run(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        return 200, views.described(await node.workflows.describe(ctx.namespace, ctx.args["workflow_id"], ctx.args["run_id"]))

    @api.endpoint("/api/workflows/<workflow_id>/runs/<run_id>/history", "GET", _op("history"), OPERATOR)
    async def history(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        q = ctx.query
        errors: dict[str, list[str]] = {}
        size = page_tokens.page_size(q, errors, default=100, maximum=1000)
        wait_raw = (q.get("wait_new_event") or "0").lower()
        if wait_raw not in ("0", "1", "true", "false"):
            errors["wait_new_event"] = ["The wait_new_event field must be 1, 0, true or false."]
        if errors:
            raise schemas.invalid(errors)
        return 200, await node.workflows.history(
            ctx.namespace,
            ctx.args["workflow_id"],
            ctx.args["run_id"],
            page_size=size,
            token=q.get("next_page_token"),
            wait=wait_raw in ("1", "true"),
            hold=cfg.poll_timeout,
        )

    @api.endpoint("/api/workflows/<workflow_id>/runs/<run_id>/history/export", "GET", Route("control"), OPERATOR)
    async def export_history(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        key = cfg.export_signing_key.encode() if cfg.export_signing_key else None
        return 200, await node.workflows.export(
            ctx.namespace, ctx.args["workflow_id"], ctx.args["run_id"], key, cfg.export_signing_key_id or ("k1" if key else None)
        )


def _register_commands(api: Api, prefix: str, scoped: bool) -> None:
    """Signal, query, update, cancel and terminate, on a workflow or on one of its runs."""
    node = api.node
    suffix = "_run" if scoped else ""

    async def signal(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        name = _name(ctx.args["name"], "signal_name", api.cfg.max_operation_name_length)
        req = schemas.parse(schemas.Signal, ctx.body)
        result = await node.workflows.signal(
            ctx.namespace, ctx.args["workflow_id"], name, _input(req.input), ctx.args.get("run_id"), req.request_id
        )
        limits = node.engine.limits
        return views.signalled(result, name, history_limit=limits.history_events, pending_signal_limit=limits.pending_signals)

    signal.__name__ = f"signal{suffix}"
    api.endpoint(f"{prefix}/signal/<name>", "POST", Route("control", "signal"), OPERATOR)(signal)

    async def query(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        name = _name(ctx.args["name"], "query_name", api.cfg.max_operation_name_length)
        req = schemas.parse(schemas.Query, ctx.body)
        return await node.queries.query(ctx.namespace, ctx.args["workflow_id"], name, _input(req.input), ctx.args.get("run_id"))

    query.__name__ = f"query{suffix}"
    api.endpoint(f"{prefix}/query/<name>", "POST", Route("control", "query"), OPERATOR)(query)

    async def update(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        name = _name(ctx.args["name"], "update_name", api.cfg.max_operation_name_length)
        if isinstance(ctx.body, dict) and "wait_policy" in ctx.body:
            raise schemas.invalid({"wait_policy": ["The wait_policy field is no longer supported. Use wait_for."]})
        req = schemas.parse(schemas.Update, ctx.body)
        wait_for = req.wait_for or "accepted"
        timeout = float(min(req.wait_timeout_seconds or 10, 55))  # under the SDK's 60 s client timeout
        result = await node.workflows.update(
            ctx.namespace, ctx.args["workflow_id"], name, _input(req.input) if req.input is not None else avro.envelope([]),
            ctx.args.get("run_id"), req.request_id, wait_for, timeout,
        )
        return views.updated(result, name, wait_for, timeout, history_limit=node.engine.limits.history_events)

    update.__name__ = f"update{suffix}"
    api.endpoint(f"{prefix}/update/<name>", "POST", Route("control", "update"), OPERATOR)(update)

    async def request_cancellation(ctx: Ctx) -> tuple[int, dict[str, Any]]:
        req = schemas.parse(schemas.RequestCancellation, ctx.body)
        result = await node.workflows.request_cancellation(
            ctx.namespace, ctx.args["workflow_id"], ctx.args.get("run_id"), req.reason, req.cleanup_timeout_seconds
        )
        return views.cancellation_requested(result)

    request_cancellation.__name__ = f"request_cancellation{suffix}"
    api.endpoint(f"{prefix}/request-cancellation", "POST", Route("control", "request_cancellation"), OPERATOR)(request_cancellation)

    if not scoped:

        @api.endpoint(f"{prefix}/message-streams/<stream>/messages", "POST", Route("control"), OPERATOR)
        async def append_message(ctx: Ctx) -> tuple[int, dict[str, Any]]:
            stream = ctx.args["stream"]
            problem = message_streams.check_name(stream)
            if problem:
                raise validation("stream_name", problem + ".")
            req = schemas.parse(schemas.AppendMessage, ctx.body)
            payload = _input(req.input) if req.input is not None else avro.envelope([])
            result = await node.workflows.append_message(ctx.namespace, ctx.args["workflow_id"], stream, req.message_id, payload)
            limits = node.engine.limits
            return views.message_appended(result, stream, req.message_id, history_limit=limits.history_events,
                                          pending_signal_limit=limits.pending_signals)

    for kind in ("cancel", "terminate"):

        async def close(ctx: Ctx, kind: str = kind) -> tuple[int, dict[str, Any]]:
            req = schemas.parse(schemas.CloseRun, ctx.body)
            result = await node.workflows.close(
                ctx.namespace, ctx.args["workflow_id"], kind, req.reason, ctx.args.get("run_id"), req.request_id
            )
            return views.closed(result, kind, req.reason)

        close.__name__ = f"{kind}{suffix}"
        api.endpoint(f"{prefix}/{kind}", "POST", Route("control", kind), OPERATOR)(close)
