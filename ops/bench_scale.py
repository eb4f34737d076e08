"""Scale (not a test: it measures): many parked runs in little memory, and one run flooded
with signals while the others keep their signal latency.

    python -m ops.bench scale --parked 100000
    python -m ops.bench scale --flood 10000 --signals 200

``parked``: N workflows started over HTTP and parked on a condition wait by a lightweight
raw-HTTP worker (not the SDK: what is measured is the server holding them, not how fast one
SDK process replays), then the server's RSS once all are parked and again after the actors
passivated, and its CPU over an idle window. ``flood``: W3 (signal → seen by workflow code,
through the SDK) measured alone, then again while one other run absorbs N signals sent as
fast as the server accepts them (a refusal for the run's pending-signal limit is retried).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from .bench_procs import Server, pct, rss_mib
from .bench_workloads import WorkerProcess, _w3

CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}
PARK = [{"type": "open_condition_wait", "condition_key": "go", "condition_definition_fingerprint": "sha256:bench"}]


class RawHTTP:
    """One keep-alive HTTP/1.1 connection with JSON bodies, at a fraction of httpx's CPU: the load
    generator shares the machine's two cores with the server, and here it must not be the limit."""

    def __init__(self, url: str) -> None:
        self.host, _, port = url.removeprefix("http://").partition(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        """One request; a connection the server closed while idle (keep-alive timeout) is opened
        again and the request sent once more (nothing was read from it, so nothing was done)."""
        try:
            return await self._post(path, headers, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            return await self._post(path, headers, body)

    async def _post(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body, separators=(",", ":")).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n{extra}\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _raw_worker(url: str, tq: str, lanes: int, stop: asyncio.Event, done: list[int]) -> None:
    """Poll workflow tasks and answer each with an open condition wait (re-opened on a wake-up)."""
    worker = f"raw-{uuid.uuid4().hex[:8]}"
    first = RawHTTP(url)
    status, _ = await first.post("/api/worker/register", WP, {"worker_id": worker, "task_queue": tq, "runtime": "python"})
    assert status == 201, status
    first.close()

    async def lane() -> None:
        http = RawHTTP(url)
        try:
            while not stop.is_set():
                status, reply = await http.post("/api/worker/workflow-tasks/poll", WP,
                                                {"worker_id": worker, "task_queue": tq, "timeout_seconds": 1})
                task = reply.get("task") if status == 200 else None
                if task is None:
                    continue
                body = {"lease_owner": worker, "workflow_task_attempt": task["workflow_task_attempt"], "commands": PARK}
                status, _ = await http.post(f"/api/worker/workflow-tasks/{task['task_id']}/complete", WP, body)
                if status == 200:
                    done[0] += 1
        finally:
            http.close()

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def _start_many(url: str, tq: str, ids: list[str], concurrency: int = 64) -> None:
    pending = iter(ids)

    async def lane() -> None:
        http = RawHTTP(url)
        try:
            for wid in pending:
                status, reply = await http.post("/api/workflows", CP, {"workflow_type": "park", "workflow_id": wid, "task_queue": tq})
                if status != 201 and not (status == 409 and reply.get("reason") == "duplicate_not_allowed"):  # a resent start
                    raise RuntimeError(f"start {wid}: {status} {str(reply)[:200]}")
        finally:
            http.close()

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def _parked(server: Server, n: int, idle_s: float, passivate_s: float) -> dict[str, Any]:
    tq = f"scale-{uuid.uuid4().hex[:6]}"
    ids = [f"park-{uuid.uuid4().hex[:8]}-{i}" for i in range(n)]
    rss_empty = rss_mib(server.pid)
    stop, done = asyncio.Event(), [0]
    worker = asyncio.create_task(_raw_worker(server.url, tq, 16, stop, done))
    t0 = time.perf_counter()
    await _start_many(server.url, tq, ids)
    accepted = time.perf_counter() - t0
    peak = rss_mib(server.pid)
    while done[0] < n:
        await asyncio.sleep(0.5)
        peak = max(peak, rss_mib(server.pid))
    parked = time.perf_counter() - t0
    stop.set()
    await worker
    rss_parked = rss_mib(server.pid)
    await asyncio.sleep(passivate_s)
    rss_idle, cpu0 = rss_mib(server.pid), server.cpu()
    await asyncio.sleep(idle_s)
    return {
        "parked": n, "starts_accepted_s": round(accepted, 1), "all_parked_s": round(parked, 1),
        "starts_per_s": round(n / accepted, 1), "server_rss_mib_empty": round(rss_empty, 1),
        "server_rss_mib_peak": round(peak, 1), "server_rss_mib_all_parked": round(rss_parked, 1),
        f"server_rss_mib_after_{passivate_s:g}s_idle": round(rss_idle, 1),
        "kib_per_parked_run_at_peak": round((peak - rss_empty) * 1024 / n, 2),
        "idle_window_s": idle_s, "server_idle_cpu_s": round(server.cpu() - cpu0, 2),
    }


async def _flood(server: Server, n_signals: int, n_w3: int) -> dict[str, Any]:
    tq_hot, tq_w3 = f"hot-{uuid.uuid4().hex[:6]}", f"w3-{uuid.uuid4().hex[:6]}"
    out: dict[str, Any] = {}
    with WorkerProcess(server.url, tq_w3):
        out["w3_alone"] = await _w3(server.url, tq_w3, n_w3)
        stop, done = asyncio.Event(), [0]
        worker = asyncio.create_task(_raw_worker(server.url, tq_hot, 2, stop, done))
        hot = f"hot-{uuid.uuid4().hex[:8]}"
        await _start_many(server.url, tq_hot, [hot], 1)
        sent, refused = [0], [0]
        lat: list[float] = []

        async def flood() -> None:
            async def lane() -> None:
                http = RawHTTP(server.url)
                try:
                    while sent[0] < n_signals:
                        sent[0] += 1
                        while True:
                            t = time.perf_counter()
                            status, _ = await http.post(f"/api/workflows/{hot}/signal/go", CP, {"input": []})
                            if status == 202:
                                lat.append(time.perf_counter() - t)
                                break
                            refused[0] += 1
                            await asyncio.sleep(0.01)
                finally:
                    http.close()

            await asyncio.gather(*(lane() for _ in range(4)))

        t0 = time.perf_counter()
        flooding = asyncio.create_task(flood())
        out["w3_during_flood"] = await _w3(server.url, tq_w3, n_w3)
        await flooding
        out["flood"] = {"signals": n_signals, "wall_s": round(time.perf_counter() - t0, 1),
                        "signals_per_s": round(n_signals / (time.perf_counter() - t0), 1),
                        "refused_pending_limit": refused[0], "accept_p50_ms": round(pct(lat, 0.5) * 1000, 2),
                        "accept_p99_ms": round(pct(lat, 0.99) * 1000, 2), "hot_run_tasks_completed": done[0]}
        stop.set()
        await worker
    return out


def run_scale(build: str, database: str | None, parked: int, flood: int, w3: int, idle_s: float) -> dict[str, Any]:
    report: dict[str, Any] = {"build": build, "journal": "postgresql" if database else "sqlite"}
    passivate = 40.0
    with Server(build=build, database=database) as server:
        if parked:
            report["parked"] = asyncio.run(_parked(server, parked, idle_s, passivate))
        if flood:
            report["flood"] = asyncio.run(_flood(server, flood, w3))
    return report
