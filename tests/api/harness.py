"""An in-process dw-server for request-path tests: no socket, no subprocess, no sleeps.

``serving`` runs a ``runtime.node.Node`` on a fresh SQLite journal inside the caller's trio
nursery and builds the same Quart-Trio app ``ops.cli`` serves (``api.app.create_app``: the
``api.http_guard.RequestGuard`` body limit is part of the app's ASGI callable, so every
request here passes it exactly as under hypercorn). ``Client`` drives that app through
quart-trio's test client and answers with ``httpx.Response`` objects, so the envelope
checks of the socket tests (tests/api/envelopes.py) apply unchanged.

What ``ops.cli._serve`` adds around the app, and so what this does not exercise, is socket
level: ``ops.hypercorn_patches.install()`` (closing on ``Connection: close``, send timeouts,
pipelined bytes after a refused body), hypercorn's own settings (keep-alive timeout, graceful
shutdown, no Server header, no access log), HTTP/1.1 framing on the wire (chunked bodies,
conflicting Content-Length/Transfer-Encoding as bytes) and SIGTERM/SIGINT draining. Those
stay in tests/e2e. A chunked upload is simulated here as a body in pieces without a length
(``Client.stream``), which is what hypercorn hands the app for one.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import trio
from quart_trio import QuartTrio

from actors.clock import TrioClock
from api.app import create_app
from runtime.config import Config
from runtime.node import Node

BASE = "http://dw.test"
_UNSET: Any = object()


class Client:
    """An httpx-like client over the app's ASGI callable (``get``, ``post``, ``request``…)."""

    def __init__(self, app: QuartTrio) -> None:
        self.app = app
        self.base_url = BASE

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = _UNSET,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send one request the way httpx frames it: a JSON body gets its Content-Type, and a
        body (or a body-carrying method) gets its Content-Length."""
        sent = dict(headers or {})
        body = content
        if json is not _UNSET:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            sent.setdefault("Content-Length", str(len(body or b"")))
        query = urlencode(params or {}, doseq=True)
        client = self.app.test_client()
        answer = await client.open(path, method=method, headers=sent, data=body or b"", query_string=params or None)
        data = await answer.get_data()
        url = f"{BASE}{path}" + (f"?{query}" if query else "")
        return httpx.Response(
            answer.status_code, headers=list(answer.headers.items()), content=data,
            request=httpx.Request(method, url, headers=sent),
        )

    async def stream(self, method: str, path: str, chunks: Iterable[bytes], headers: dict[str, str]) -> httpx.Response:
        """A body delivered in pieces without a Content-Length, as a chunked upload reaches the app."""
        client = self.app.test_client()
        async with client.request(path, method=method, headers=headers) as connection:
            for chunk in chunks:
                await connection.send(chunk)
            await connection.send_complete()
        answer = await connection.as_response()
        return httpx.Response(
            answer.status_code, headers=list(answer.headers.items()), content=await answer.get_data(),
            request=httpx.Request(method, f"{BASE}{path}", headers=headers),
        )

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)


@asynccontextmanager
async def serving(data_dir: Path, *, mock_time: bool = False, **overrides: Any) -> AsyncIterator[tuple[Node, Client]]:
    """A node on a fresh SQLite journal in ``data_dir`` and a client of its app; the node stops
    (parked polls answered, journal closed) when the block ends.

    ``mock_time``: the node reads the time from trio's clock (``actors.clock.TrioClock``), so a
    test run under trio's MockClock (see tests/api/conftest.py ``mock_http``) moves leases, timers
    and long polls by jumping the clock instead of waiting for them."""
    # A test's journal need not survive an OS crash: no fsync per commit (the server's default is FULL).
    cfg = Config.from_env(data_dir=str(data_dir), database=None, **{"synchronous": "OFF", **overrides})
    node = Node(cfg, TrioClock() if mock_time else None)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node, Client(create_app(node))
        finally:
            node.engine.drain()
            nursery.cancel_scope.cancel()
