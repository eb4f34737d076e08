"""The request pipeline shared by every route: ``Api.endpoint`` wraps a handler in it.

The route modules register their handlers here and api.app assembles them, so the
imports point one way (api.app → routes → api.endpoints) without a loop.

Order is normative (control-plane 1.2): route match → body gate → authentication →
role → version header → namespace → handler. Every failure a client can cause comes
back in the plane's envelope with a stable reason; an unexpected failure becomes a
500 ``server_error`` without a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors import log_context, tracing
from actors.run_actor import NotOwner, RunDamaged, RunNotFound, RunUnavailable
from persistence.ids import shard_of_run
from persistence.journal import StoreUnavailable
from runtime.errors import ForwardTo, ProtocolError
from runtime.node import Node
from runtime.payload_storage import MAX_TRANSPORT_BYTES, UPLOAD_PATH
from runtime.peers import REROUTED_HEADER, RPC_PATH
from runtime.replay_guard import ReplayUnavailable
from runtime.router import OWNER_BUDGET, Unreachable

from . import json_body, request_checks, unavailable
from .auth import Authenticator, authorize
from .envelope import Route, render
from .http_guard import REFUSAL, RequestGuard
from .manifest import server_capabilities
from .request_view import Headers, QueryArgs, RequestView

log = logging.getLogger("dw.api")
_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
RPC_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class Ctx:
    """What a handler is given once the pipeline has passed: namespace, parsed body, path and query args."""

    namespace: str
    body: Any
    args: dict[str, str]
    query: dict[str, str]
    request: RequestView | None = None


Handler = Callable[[Ctx], Awaitable[tuple[int, dict[str, Any]]]]


REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(sent: str | None) -> str:
    """The client's request id when it is a sane token (it is echoed and logged), else a new one."""
    return sent if sent is not None and _REQUEST_ID.match(sent) else uuid.uuid4().hex


@dataclass(frozen=True)
class Relayed:
    """Another member's answer to a request forwarded to it, passed on as it came."""

    status: int
    headers: dict[str, str]
    content: bytes


@dataclass(frozen=True)
class Endpoint:
    """A registered route: its pipeline settings and its handler."""

    rule: str
    method: str
    route: Route
    roles: tuple[str, ...]
    version: bool
    namespace: bool
    auth: bool
    fn: Handler
    name: str


class Api:
    """The Quart-Trio app of one node and the pipeline its endpoints run in (see the module doc)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.cfg = node.cfg
        # the application keeps the name it always had (its logger, root path): api.app serves it
        # No static folder: Quart's default /static route would sit outside the endpoint
        # registry, and so outside its authentication.
        self.app = QuartTrio("api.app", static_folder=None)
        # Body size is bounded by the RequestGuard below, per route, before anything buffers it.
        self.app.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=60, MAX_CONTENT_LENGTH=None)
        self.app.url_map.merge_slashes = False  # "/api//x" is not found, not a redirect built from Host
        self.guard = RequestGuard(self.app.asgi_app, self._body_limit)
        self.app.asgi_app = self.guard  # type: ignore[method-assign]
        self.capabilities = server_capabilities(self.cfg.poll_timeout, self.cfg.compression, self.cfg.sticky_ttl_seconds)
        self.auth = Authenticator(
            self.cfg.auth_driver, self.cfg.auth_tokens, self.cfg.signature_keys,
            backward_compatible=self.cfg.auth_backward_compatible, compat=self.cfg.signature_compat,
        )
        self.metrics = node.request_metrics  # None when DW_METRICS_ENABLED=false
        self.registry: list[dict[str, Any]] = []  # every endpoint, for the OpenAPI document
        self.endpoints: dict[str, Endpoint] = {}  # by Quart endpoint name (api.fast_path finds them so)
        self.app.register_error_handler(HTTPException, self._http_error)
        self.app.register_error_handler(Exception, self._unexpected)

    # --- pipeline ------------------------------------------------------------------

    def endpoint(
        self,
        rule: str,
        method: str,
        route: Route,
        roles: tuple[str, ...],
        *,
        version: bool = True,
        namespace: bool = True,
        auth: bool = True,
        documented: bool = True,
    ) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            entry = Endpoint(rule, method, route, roles, version, namespace, auth, fn, f"{fn.__name__}_{method.lower()}")

            async def view(**path_args: str) -> Response:
                status, data, headers = await self.serve(self.quart_request(), entry, path_args)
                content_type = headers.pop("Content-Type", None)
                return Response(data, status=status, headers=headers, content_type=content_type)

            view.__name__ = entry.name
            self.endpoints[entry.name] = entry
            if documented:
                self.registry.append(
                    {"rule": rule, "method": method, "route": route, "roles": roles, "version": version, "namespace": namespace,
                     "auth": auth, "fn": fn}
                )
            self.app.add_url_rule(rule, endpoint=view.__name__, view_func=view, methods=[method], provide_automatic_options=False)
            return fn

        return deco

    @staticmethod
    def quart_request() -> RequestView:
        """The current Quart request as the pipeline reads it (the body is read when asked for)."""
        scope = request.scope

        async def read() -> bytes:
            return await request.get_data(cache=True)  # type: ignore[no-any-return]

        return RequestView(scope, Headers.from_asgi(scope.get("headers") or []), QueryArgs(scope.get("query_string") or b""), read)

    async def serve(self, req: RequestView, entry: Endpoint, path_args: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """One request through the pipeline to its answer: status, body bytes, headers."""
        started = time.perf_counter()
        request_id = request_id_of(req.headers.get(REQUEST_ID_HEADER))
        token = log_context.enter(request_id=request_id, namespace=req.headers.get("X-Namespace"),
                                  workflow_id=path_args.get("workflow_id"), run_id=path_args.get("run_id"))
        try:
            if tracing.TRACER is None:
                result = await self._pipeline(
                    req, entry.route, entry.roles, entry.version, entry.namespace, entry.auth, entry.fn, path_args
                )
            else:
                result = await self._traced(req, entry, path_args, request_id)
        finally:
            log_context.leave(token)
        if isinstance(result, Relayed):
            status, data, headers = result.status, result.content, dict(result.headers)
        else:
            status, out = result
            data, headers = self.render_parts(req, entry.route, status, out, path_args)
        headers[REQUEST_ID_HEADER] = request_id
        if self.metrics is not None:
            self.metrics.observe(entry.rule, entry.method, status, time.perf_counter() - started)
        return status, data, headers

    async def _traced(self, req: RequestView, entry: Endpoint, path_args: dict[str, str], request_id: str) -> Any:
        """The pipeline inside a server span whose parent is the caller's: its ``traceparent``
        header, or the ``observability_context`` carrier the SDK puts in start, signal, update
        and cancel bodies (extended spec §15.1)."""
        headers = {k.lower(): v for k, v in req.headers.items() if k.lower() in ("traceparent", "tracestate")}
        if "traceparent" not in headers and req.method == "POST":
            try:
                body = json.loads(await req.data() or b"null")
            except (ValueError, UnicodeDecodeError):
                body = None
            carried = tracing.carrier(body.get("observability_context")) if isinstance(body, dict) else None
            if carried is not None:
                headers = dict(carried["carrier"])
        with tracing.span(f"{entry.method} {entry.rule}", parent=tracing.context_of(headers), **{
            "http.request.method": entry.method, "http.route": entry.rule, "dw.request_id": request_id,
            "dw.workflow_id": path_args.get("workflow_id"), "dw.run_id": path_args.get("run_id"),
        }) as span:
            result = await self._pipeline(
                req, entry.route, entry.roles, entry.version, entry.namespace, entry.auth, entry.fn, path_args
            )
            span.set_attribute("http.response.status_code", result.status if isinstance(result, Relayed) else result[0])
            return result

    async def _pipeline(
        self, req: RequestView, route: Route, roles: tuple[str, ...], version: bool, needs_ns: bool, auth: bool,
        fn: Handler, args: dict[str, str],
    ) -> tuple[int, dict[str, Any]] | Relayed:
        try:
            body = await self._body_gate(req)
            if auth:
                raw = await req.data()
                principal = self.auth.authenticate(
                    method=req.method, path=req.path, query_string=req.query_string.decode("latin-1"),
                    headers=req.headers, body=raw,
                )
                if principal.replay_key is not None and self._forwarded_by(req, raw) is None:
                    # a request a verified peer forwards was checked by the node the client reached
                    await self._first_use(principal.replay_key, principal.replay_expires_at)
                authorize(principal, roles)
            if route.plane == "worker":
                request_checks.worker_version(req)
            elif version:
                request_checks.control_version(req)
            ns = (req.headers.get("X-Namespace") or req.args.get("namespace") or self.cfg.default_namespace).lower()
            log_context.bind(namespace=ns)
            if needs_ns and not self.node.namespaces.exists(ns):
                raise ProtocolError(
                    404,
                    "namespace_not_found",
                    f"Namespace '{ns}' does not exist.",
                    namespace=ns,
                    remediation="Register the namespace via POST /api/namespaces, or send an X-Namespace header naming an existing namespace.",
                )
            return await self._handle(req, fn, Ctx(ns, body, args, req.args.to_dict(), req))
        except ProtocolError as exc:  # every refusal a client can cause, at any layer
            return exc.status, exc.body()
        except RunDamaged:
            return 409, {
                "message": "Records of this run's journal cannot be read (the server logged which); the run can only "
                "be terminated.",
                "reason": "run_journal_unreadable",
            }
        except RunUnavailable:
            return 503, self._unavailable(
                req, "run_unavailable", "The run's journal could not be loaded; the server logged why and retries shortly."
            )
        except (ForwardTo, NotOwner):
            return 503, self._unavailable(
                req, "shard_not_owned", "No node owns this shard right now (the cluster is rebalancing); retry shortly."
            )
        except StoreUnavailable:
            return 503, self._unavailable(
                req, "store_unavailable", "The server cannot reach its database right now; retry shortly."
            )
        except RunNotFound:
            if route.plane == "worker":
                task_id = args.get("task_id")
                return 404, {"message": f"Task [{task_id}] was not found.", "reason": "task_not_found", "task_id": task_id}
            return 404, {"message": "Workflow run not found.", "reason": "run_not_found"}

    @staticmethod
    def _unavailable(req: RequestView, reason: str, message: str) -> dict[str, Any]:
        return unavailable.body(req.path, req.json_body, reason, message)

    async def _handle(self, req: RequestView, fn: Handler, ctx: Ctx) -> tuple[int, dict[str, Any]] | Relayed:
        """Run the handler here, or forward the request to the shard's owner (runtime.router).

        A rebalance is ridden out for ``OWNER_BUDGET`` from the first miss; then the answer is
        503 with Retry-After. A request a member forwarded is not forwarded again (one hop):
        it waits for the shard to become this node's within the same budget."""
        deadline: float | None = None
        router = self.node.engine.router
        while True:
            try:
                return await fn(ctx)
            except (ForwardTo, NotOwner) as exc:
                shard = exc.shard if isinstance(exc, ForwardTo) else shard_of_run(str(exc.args[0]))
                if shard is None or self.node.engine.peers is None:
                    raise
                now = trio.current_time()
                deadline = now + OWNER_BUDGET if deadline is None else deadline
                if self._forwarded_by(req, await req.data()) is None:
                    body = await req.data()

                    async def send_to(url: str, rerouted: bool, body: bytes = body, shard: int = shard) -> httpx.Response:
                        headers = {k: v for k, v in req.headers.to_dict().items() if k.lower() != "x-request-id"}
                        headers[REQUEST_ID_HEADER] = log_context.current().get("request_id") or request_id_of(None)  # one id on both nodes' logs
                        with tracing.span("forward", **{"dw.peer": url, "dw.shard": shard}):
                            tracing.inject(headers)  # the owner's span continues this trace
                            return await self.node.engine.peers.forward(
                                url, req.method, req.raw_target, headers, body, rerouted=rerouted
                            )

                    try:
                        answer = await router.forward(shard, send_to, budget=max(deadline - now, 0.0))
                    except Unreachable:
                        raise exc from None
                    if answer is not None:
                        return self._relay(answer)
                elif now >= deadline:
                    raise
                else:
                    await trio.sleep(0.25)  # forwarded here: this node is about to own the shard, or the budget ends

    async def rerouted(self, req: RequestView | None) -> bool:
        """A member re-sent this request after losing the member it first sent it to (runtime.router)."""
        if req is None or req.headers.get(REROUTED_HEADER) != "1":
            return False
        return self._forwarded_by(req, await req.data()) is not None

    @staticmethod
    def _relay(answer: httpx.Response) -> Relayed:
        drop = ("content-length", "transfer-encoding", "connection", "content-encoding")
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in drop}
        content_type = next((headers.pop(k) for k in list(headers) if k.lower() == "content-type"), None)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return Relayed(answer.status_code, headers, answer.content)

    def _forwarded_by(self, req: RequestView, body: bytes) -> str | None:
        """The peer that forwarded this request, when its node signature holds; None otherwise.

        A client can send the forwarding header too; unverified, it means nothing."""
        if req.forwarded is None:
            peers = self.node.engine.peers
            req.forwarded = (peers.forwarded_by(req.method, req.raw_target, body, req.headers) if peers else None,)
        return req.forwarded[0]

    async def _first_use(self, key: bytes, expires_at: float) -> None:
        try:
            first = await self.node.replay.first_use(key, expires_at)
        except ReplayUnavailable:
            raise ProtocolError(
                503, "replay_check_unavailable",
                "The server cannot check request signatures for replays right now (its database is unreachable); retry shortly.",
                retryable=True,
            ) from None
        if not first:
            raise ProtocolError(
                401, "unauthorized",
                "Request signature was already used; sign every request afresh (add an X-DW-Nonce to tell identical requests apart).",
            )

    def _body_limit(self, path: str) -> int:
        """Bytes a route reads at most. A node call may carry a run's whole history (a query), and
        only a member's call is read at all (its signature is checked on the headers first)."""
        if path == RPC_PATH:
            return max(RPC_MAX_BYTES, 16 * self.cfg.max_payload_bytes)
        return max(MAX_TRANSPORT_BYTES, self.cfg.max_payload_bytes) if path == UPLOAD_PATH else self.cfg.max_payload_bytes

    async def _body_gate(self, req: RequestView) -> Any:
        limit = self._body_limit(req.path) if req.path == UPLOAD_PATH else self.cfg.max_payload_bytes
        req.close_connection = True  # until the body has been read, an early answer must end the connection
        refusal = req.scope.get(REFUSAL)
        if refusal == "conflicting_framing":
            raise ProtocolError(
                400, "conflicting_framing",
                "The request has both Content-Length and Transfer-Encoding; send exactly one of them.",
            )
        too_large = ProtocolError(
            413,
            "payload_too_large",
            f"Request payload exceeds the maximum allowed size of {limit} bytes.",
            limit=limit,
        )
        length = req.content_length
        if refusal == "too_large" or (length is not None and length > limit):
            raise too_large
        raw = await req.data()
        if req.scope.get(REFUSAL) == "too_large" or len(raw) > limit:
            raise too_large
        req.close_connection = False
        request_checks.single_valued_query(req)
        if not raw:
            return {}
        if req.method not in _BODY_METHODS:
            return {}
        if req.path == UPLOAD_PATH:
            return raw  # a payload's bytes, not JSON (extended §13.4)
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise ProtocolError(
                415,
                "unsupported_media_type",
                "Request bodies must use a JSON media type.",
                accepted_content_types=["application/json", "application/*+json"],
            )
        req.json_body = json_body.parse(raw, self.cfg.max_payload_depth)
        return req.json_body

    # --- rendering and errors ------------------------------------------------------

    def render_parts(
        self, req: RequestView, route: Route, status: int, body: dict[str, Any], args: dict[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        """The answer's bytes and headers (Content-Type included), for either way of sending it."""
        data, headers = render(
            route, status, body, args,
            capabilities=self.capabilities, accept_encoding=req.headers.get("Accept-Encoding"), compression=self.cfg.compression,
        )
        if req.close_connection:
            headers["Connection"] = "close"
        if status == 503:
            headers["Retry-After"] = str(body.get("retry_after_seconds") or unavailable.RETRY_AFTER_SECONDS)
        return data, headers

    def render(self, req: RequestView, route: Route, status: int, body: dict[str, Any], args: dict[str, str]) -> Response:
        data, headers = self.render_parts(req, route, status, body, args)
        content_type = headers.pop("Content-Type")
        return Response(data, status=status, headers=headers, content_type=content_type)

    @staticmethod
    def _route_for_path(path: str) -> Route:
        if path == "/api/worker" or path.startswith("/api/worker/"):
            return Route("worker")
        return Route("control")

    async def _http_error(self, exc: HTTPException) -> Response:
        req = self.quart_request()
        route = self._route_for_path(req.path)
        code = exc.code or 500
        if 300 <= code < 400:
            code = 404  # routing's slash redirects would echo the Host header; nothing here moved
        length = req.content_length
        req.close_connection = True
        if code != 413 and not req.scope.get(REFUSAL) and (length is None or length <= self.cfg.max_payload_bytes):
            try:
                raw = await req.data()
                req.close_connection = bool(req.scope.get(REFUSAL)) or len(raw) > self.cfg.max_payload_bytes
            except Exception:  # noqa: BLE001 - a broken body only means the connection closes
                pass
        if req.scope.get(REFUSAL) == "conflicting_framing":
            code, body = 400, {
                "message": "The request has both Content-Length and Transfer-Encoding; send exactly one of them.",
                "reason": "conflicting_framing",
            }
        elif code == 404:
            body = {"message": f"No route matches {req.method} {req.path}.", "reason": "not_found"}
        elif code == 405:
            body = {"message": f"Method {req.method} is not allowed on {req.path}.", "reason": "method_not_allowed"}
        elif code == 413:
            limit = self.cfg.max_payload_bytes
            body = {
                "message": f"Request payload exceeds the maximum allowed size of {limit} bytes.",
                "reason": "payload_too_large",
                "limit": limit,
            }
        else:
            body = {"message": exc.description or "Request failed.", "reason": "bad_request" if code < 500 else "server_error"}
        return self.render(req, route, code, body, {})

    async def _unexpected(self, exc: Exception) -> Response:
        req = self.quart_request()
        log.exception("unhandled error on %s %s", req.method, req.path)
        return self.render(req, self._route_for_path(req.path), 500, self.UNEXPECTED, {})

    UNEXPECTED = {"message": "The server hit an unexpected error; it has been logged.", "reason": "server_error"}
