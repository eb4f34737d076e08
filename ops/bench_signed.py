"""Signed requests per second and their latency (not a test: it measures the replay check).

``python -m ops.bench signed --server -n 3000 -c 20`` starts a server with the signature driver
and sends N signed describes of one workflow, C at a time, each with its own nonce, so every
request is a first use the replay cache must record (in the journal) before answering. Compare
``--no-sign`` (the none driver) for the cost of the check itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import statistics
import time
import uuid

import httpx

KEY = "bench-operator-key"
CP = {"X-Durable-Workflow-Control-Plane-Version": "2", "Content-Type": "application/json"}


def _signed(method: str, path: str, body: bytes = b"") -> dict[str, str]:
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    text = "\n".join(["DW-HMAC-SHA256", method, path, "", "", ts, hashlib.sha256(body).hexdigest(), nonce])
    sig = hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()
    return {**CP, "X-DW-Timestamp": ts, "X-DW-Nonce": nonce, "X-Signature": sig}


async def signed_bench(url: str, n: int, concurrency: int, sign: bool) -> dict[str, object]:
    headers = _signed if sign else (lambda method, path, body=b"": dict(CP))
    wid = f"bench-signed-{uuid.uuid4().hex[:8]}"
    body = f'{{"workflow_id": "{wid}", "workflow_type": "bench", "task_queue": "nobody"}}'.encode()
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as http:
        r = await http.post("/api/workflows", content=body, headers=headers("POST", "/api/workflows", body))
        r.raise_for_status()
        path = f"/api/workflows/{wid}"
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def client() -> None:
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                answer = await http.get(path, headers=headers("GET", path))
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "workload": "signed", "auth": "signature" if sign else "none", "requests": n, "concurrency": concurrency,
        "requests_per_s": round(n / elapsed, 1), "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2), "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }
