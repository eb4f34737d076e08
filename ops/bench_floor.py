"""The floor under the per-request target (not a test: it measures): server CPU per request of a
trivial route, on the same hypercorn-on-trio stack, on this machine, now.

    python -m ops.bench floor -n 2000

Issue 12's "≤ 0.5 ms per request" was "what hypercorn on trio serves a trivial request in, here";
machines differ by 2x, so the floor is measured next to the server's own figures: a QuartTrio
app answering one JSON route, and a bare ASGI callable answering the same bytes. Each runs in a
process of its own (``python -m ops.bench_floor quart|asgi PORT``) and is driven exactly as
``ops.bench requests`` drives the server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from .bench_procs import tree_cpu_seconds
from .bench_requests import LANES, SLICES

BODY = b'{"workflow_id":"w","status":"waiting"}'


def _quart_app() -> Any:
    from quart import Response
    from quart_trio import QuartTrio

    app = QuartTrio("floor")

    @app.get("/api/workflows/<wid>")
    async def describe(wid: str) -> Response:
        return Response(BODY, content_type="application/json")

    return app


async def _bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def _serve(kind: str, port: int) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    app = _quart_app() if kind == "quart" else _bare_app
    trio.run(serve, app, config)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _drive(url: str, pid: int, n: int) -> float:
    limits = httpx.Limits(max_connections=LANES, max_keepalive_connections=LANES)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        for _ in range(50):
            (await http.get("/api/workflows/w")).raise_for_status()  # warm-up
        per: list[float] = []
        size = n // SLICES
        for _ in range(SLICES):
            todo = iter(range(size))
            before = tree_cpu_seconds(pid)

            async def lane(todo: Any = todo) -> None:
                for _ in todo:
                    (await http.get("/api/workflows/w")).raise_for_status()

            await asyncio.gather(*(lane() for _ in range(LANES)))
            per.append((tree_cpu_seconds(pid) - before) / size * 1000)
    return statistics.median(per)


def run_floor(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": n}
    for kind in ("quart", "asgi"):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "ops.bench_floor", kind, str(port)],
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    httpx.get(url + "/api/workflows/w", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            out[f"{kind}_trivial_route_cpu_ms_per_request"] = round(asyncio.run(_drive(url, proc.pid, n)), 3)
        finally:
            proc.terminate()
            proc.wait(10)
    return out


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
