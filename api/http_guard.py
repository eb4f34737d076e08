"""ASGI middleware in front of the app: bounds what is read from a client before any route runs.

Quart buffers a request body as the server delivers it, whatever its size, and hypercorn
hands over a chunked body without a length to check first. So this layer counts the body as
it arrives and stops reading at the route's limit — declared (``Content-Length``) or
streamed (chunked) — before authentication, which needs the whole body, ever sees it. A
request that declares both ``Content-Length`` and ``Transfer-Encoding`` is ambiguous
(request smuggling) and is not read at all.

Refusals are not answered here: the request goes on to the app with an empty body and a
``dw.refusal`` mark in its scope, so the answer is the route's own envelope; the app closes
the connection after it, which also discards whatever the client still sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

REFUSAL = "dw.refusal"  # scope key: "too_large" | "conflicting_framing"

Receive = Callable[[], Awaitable[dict[str, Any]]]
_END = {"type": "http.request", "body": b"", "more_body": False}


def framing_refusal(headers: list[tuple[bytes, bytes]], limit: int) -> str | None:
    """Why a request must not be read at all, judged on its headers alone (pure)."""
    lengths = [v for k, v in headers if k.lower() == b"content-length"]
    chunked = any(k.lower() == b"transfer-encoding" for k, _ in headers)
    if lengths and chunked:
        return "conflicting_framing"
    for value in lengths:
        if value.strip().isdigit() and int(value) > limit:
            return "too_large"
    return None


class RequestGuard:
    def __init__(self, app: Callable[..., Awaitable[None]], limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Callable[..., Awaitable[None]]) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        refusal = framing_refusal(scope.get("headers", []), limit)
        if refusal is not None:
            scope[REFUSAL] = refusal
            await self.app(scope, _ended(), send)
            return
        await self.app(scope, _bounded(scope, receive, limit), send)


def _ended() -> Receive:
    """A body that is empty, without reading a byte of what the client sends."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await trio.sleep_forever()  # the app answers and the connection closes
        delivered = True
        return dict(_END)

    return receive


def _bounded(scope: dict[str, Any], receive: Receive, limit: int) -> Receive:
    """The client's body as it comes, until it passes ``limit``: then the body ends there
    (marked refused) and nothing more is read."""
    total = 0
    stopped = False

    async def guarded() -> dict[str, Any]:
        nonlocal total, stopped
        if stopped:
            await trio.sleep_forever()
        message = await receive()
        if message.get("type") == "http.request":
            total += len(message.get("body") or b"")
            if total > limit:
                scope[REFUSAL] = "too_large"
                stopped = True
                return dict(_END)
        return message  # after the body, only the disconnect comes: it cancels a parked poll

    return guarded
