"""Hot routes served straight from ASGI, through the same pipeline, without Quart's per-request
machinery (request and app contexts, the request object, the response object, a nursery).

Why: measured on this machine (``ops.bench requests``), a trivial QuartTrio route costs about
0.52 ms of server CPU per request and the same answer from a bare ASGI callable on the same
hypercorn 0.36 ms; the SDK's hot requests (polls, task completions, start, describe, signal,
history) are most of a workflow's requests. Everything else stays on Quart.

What stays identical: routing (Quart's own url map decides; anything it would not send to a
hot endpoint — not found, wrong method, a redirect — goes to Quart unchanged), the pipeline and
its order (``Api.serve``), the envelopes and headers, the body limits (``RequestGuard`` sits in
front of both), the body timeout, and a parked poll is cancelled when its client goes away.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from .endpoints import Api, Endpoint
from .request_view import Headers, QueryArgs, RequestView

log = logging.getLogger("dw.api")
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HOT_CONTROL = frozenset({
    "start_post", "describe_get", "describe_run_get", "history_get", "signal_post", "signal_run_post", "read_workflow_stream_get",
})
PARKING = frozenset({"poll_workflow_post", "poll_activity_post", "poll_query_post", "read_workflow_stream_get"})  # may wait for work
BODY_TIMEOUT = 60.0  # as Quart's BODY_TIMEOUT for the other routes
TIMEOUT_BODY = {"message": "The request body did not arrive in time.", "reason": "bad_request"}


class BodyTimeout(Exception):
    """The client did not send its whole body within ``BODY_TIMEOUT``."""


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


def is_hot(entry: Endpoint) -> bool:
    return entry.rule.startswith("/api/worker/") or entry.name in HOT_CONTROL


class FastPath:
    def __init__(self, api: Api, inner: Callable[[dict[str, Any], Receive, Send], Awaitable[None]]) -> None:
        self.api = api
        self.inner = inner
        self._adapter: MapAdapter | None = None

    def _match(self, scope: dict[str, Any]) -> tuple[Endpoint, dict[str, str]] | None:
        if self._adapter is None:
            self._adapter = self.api.app.url_map.bind("localhost")
        try:
            name, args = self._adapter.match(scope["path"], scope["method"])
        except HTTPException:
            return None  # not found, method not allowed, a redirect: Quart answers it as always
        entry = self.api.endpoints.get(name)  # type: ignore[arg-type]
        if entry is None or not is_hot(entry):
            return None
        return entry, args

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        matched = self._match(scope) if scope.get("type") == "http" and scope.get("method") in ("GET", "POST") else None
        if matched is None:
            await self.inner(scope, receive, send)
            return
        entry, args = matched
        try:
            query = QueryArgs(scope.get("query_string") or b"")
        except UnicodeDecodeError:  # whatever Quart makes of a query that is not UTF-8, it answers
            await self.inner(scope, receive, send)
            return
        req = RequestView(scope, Headers.from_asgi(scope.get("headers") or []), query, lambda: _read_body(receive))
        try:
            if entry.name in PARKING:
                await req.data()  # the whole body first: after it, the only message left is a disconnect
                answer = await _cancelled_on_disconnect(self.api.serve(req, entry, args), receive)
                if answer is None:
                    return  # the client is gone: nobody to answer
            else:
                answer = await self.api.serve(req, entry, args)
        except ClientGone:
            return
        except BodyTimeout:
            req.close_connection = True
            data, headers = self.api.render_parts(req, entry.route, 408, dict(TIMEOUT_BODY), {})
            answer = (408, data, headers)
        except Exception:  # noqa: BLE001 - the same 500 envelope Quart's handler gives, never a traceback
            log.exception("unhandled error on %s %s", req.method, req.path)
            req.close_connection = False
            data, headers = self.api.render_parts(req, entry.route, 500, dict(self.api.UNEXPECTED), {})
            answer = (500, data, headers)
        status, data, headers = answer
        raw = [(b"content-length", str(len(data)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": data, "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    with trio.move_on_after(BODY_TIMEOUT) as scope:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunks.append(message.get("body") or b"")
            if not message.get("more_body"):
                break
    if scope.cancelled_caught:
        raise BodyTimeout
    return b"".join(chunks)


async def _cancelled_on_disconnect(work: Awaitable[Any], receive: Receive) -> Any:
    """``work``'s result; None if the client disconnected first (``work`` is then cancelled,
    so a parked poll gives its task back to the queue)."""
    result: list[Any] = []

    async with trio.open_nursery() as nursery:

        async def run() -> None:
            result.append(await work)
            nursery.cancel_scope.cancel()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(run)
        nursery.start_soon(watch)
    return result[0] if result else None
