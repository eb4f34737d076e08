"""W1–W4 through the official SDK, as the side-by-side harness defines them (not a test).

    python -m ops.bench workloads                      # this build, SQLite, W1–W4
    python -m ops.bench workloads --compare /tmp/before --rounds 3

W1 hello (N one-activity workflows, closed loop at C); W2 chain (ten sequential activities),
also with local activities (W2-local) and with a sticky worker (W2-sticky); W3 signal → seen in
workflow code, one at a time; W4 N runs that park on a wait (starts accepted, all parked, and
the idle CPU and journal writes while they stay parked). One SDK worker process at SDK
defaults; results awaited with ``WorkflowHandle.result(poll_interval=0.05)``. Every phase
reports the server's CPU (its process tree, from /proc), the worker's and the client's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from durable_workflow import Client, activity, workflow

from .bench_procs import Server, cpu_seconds, pct, rss_mib, serve_worker


@activity.defn(name="bw_greet")
def bw_greet(name: str) -> str:
    return "hello " + name


@activity.defn(name="bw_chain_step")
def bw_chain_step(acc: str, i: int) -> str:
    return f"{acc}|s{i}"


@workflow.defn(name="bw_hello")
class Hello:
    def run(self, ctx, name):  # type: ignore[no-untyped-def]
        return (yield ctx.schedule_activity("bw_greet", [name]))


@workflow.defn(name="bw_chain")
class Chain:
    def run(self, ctx, acc, local=False):  # type: ignore[no-untyped-def]
        for i in range(10):
            call = ctx.local_activity if local else ctx.schedule_activity
            acc = yield call("bw_chain_step", [acc, i])
        return acc


@workflow.defn(name="bw_signal")
class SignalSeen:
    def __init__(self) -> None:
        self.msg: Any = None

    @workflow.signal("sig")
    def sig(self, msg: Any) -> None:
        self.msg = msg

    def run(self, ctx):  # type: ignore[no-untyped-def]
        yield ctx.wait_condition(lambda: self.msg is not None, key="sig")
        return {"t_obs": time.time(), "msg": self.msg}  # measured in workflow code, as the harness asks


@workflow.defn(name="bw_park")
class Park:
    @workflow.signal("never")
    def never(self) -> None:
        pass

    def run(self, ctx):  # type: ignore[no-untyped-def]
        yield ctx.wait_condition(lambda: False, key="never")
        return None


WORKFLOWS = [Hello, Chain, SignalSeen, Park]
ACTIVITIES = [bw_greet, bw_chain_step]


def _worker_main(url: str, task_queue: str, sticky: bool, ready: Any, stop: Any) -> None:
    extra = {"sticky_cache_capacity": 1000} if sticky else {}
    serve_worker(url, ready, stop, task_queue=task_queue, workflows=WORKFLOWS, activities=ACTIVITIES, **extra)


class WorkerProcess:
    """One SDK worker process (SDK defaults), like a user's."""

    def __init__(self, url: str, task_queue: str, sticky: bool = False) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.stop_event = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=_worker_main, args=(url, task_queue, sticky, self.ready, self.stop_event))

    def __enter__(self) -> WorkerProcess:
        self.proc.start()
        if not self.ready.wait(60):
            raise RuntimeError("the SDK worker did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.proc.join(60)
        if self.proc.is_alive():
            self.proc.kill()

    def cpu(self) -> float:
        assert self.proc.pid is not None
        return cpu_seconds(self.proc.pid)


class Meter:
    """CPU of server, worker and client over one phase."""

    def __init__(self, server: Server, worker: WorkerProcess) -> None:
        self.server, self.worker = server, worker

    def __enter__(self) -> Meter:
        self.t0, self.s0, self.w0, self.c0 = time.perf_counter(), self.server.cpu(), self.worker.cpu(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.server_cpu = self.server.cpu() - self.s0
        self.worker_cpu = self.worker.cpu() - self.w0
        self.client_cpu = time.process_time() - self.c0

    def report(self) -> dict[str, float]:
        return {"wall_s": round(self.wall, 2), "server_cpu_s": round(self.server_cpu, 2),
                "worker_cpu_s": round(self.worker_cpu, 2), "client_cpu_s": round(self.client_cpu, 2)}


async def _closed_loop(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies


async def _run_many(url: str, tq: str, kind: str, n: int, concurrency: int, arg: Callable[[int], list[Any]],
                    expect: Callable[[int], Any]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    async with Client(url) as client:

        async def one(i: int) -> None:
            handle = await client.start_workflow(workflow_type=kind, workflow_id=f"{kind}-{tag}-{i}", task_queue=tq, input=arg(i))
            result = await client.get_workflow_handle(handle.workflow_id).result(timeout=300, poll_interval=0.05)
            assert result == expect(i), (result, expect(i))

        started = time.perf_counter()
        latencies = await _closed_loop(n, concurrency, one)
        wall = time.perf_counter() - started
    return {"workflows": n, "concurrency": concurrency, "workflows_per_s": round(n / wall, 1),
            "p50_ms": round(pct(latencies, 0.5) * 1000, 1), "p99_ms": round(pct(latencies, 0.99) * 1000, 1)}


async def _parked(client: Client, wid: str) -> bool:
    run = await client.describe_workflow(wid)
    run_id = run.get("run_id") if isinstance(run, dict) else getattr(run, "run_id", None)
    events = (await client.get_history(wid, run_id, page_size=100))["events"]
    return any(e["event_type"] == "ConditionWaitOpened" for e in events)


async def _w3(url: str, tq: str, n: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    ids = [f"bw-sig-{tag}-{i}" for i in range(n)]
    async with Client(url) as client:
        await _closed_loop(n, 20, lambda i: client.start_workflow(workflow_type="bw_signal", workflow_id=ids[i], task_queue=tq, input=[]))
        for wid in ids:
            while not await _parked(client, wid):
                await asyncio.sleep(0.05)
        seen, rounds = [], []
        for wid in ids:
            t_send = time.time()
            await client.signal_workflow(wid, "sig", args=[{"t_send": t_send}])
            result = await client.get_workflow_handle(wid).result(timeout=60, poll_interval=0.005)
            rounds.append(time.time() - t_send)
            seen.append(result["t_obs"] - t_send)
    return {"signals": n, "send_to_seen_p50_ms": round(pct(seen, 0.5) * 1000, 2), "send_to_seen_p99_ms": round(pct(seen, 0.99) * 1000, 2),
            "send_to_result_p50_ms": round(pct(rounds, 0.5) * 1000, 2), "send_to_result_p99_ms": round(pct(rounds, 0.99) * 1000, 2)}


async def _w4(url: str, tq: str, n: int, server: Server, idle_s: float) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    ids = [f"bw-park-{tag}-{i}" for i in range(n)]
    async with Client(url) as client:
        t0 = time.perf_counter()
        await _closed_loop(n, 50, lambda i: client.start_workflow(workflow_type="bw_park", workflow_id=ids[i], task_queue=tq, input=[]))
        accepted = time.perf_counter() - t0
        waiting = set(ids)
        while waiting:
            done = await asyncio.gather(*(_parked(client, wid) for wid in list(waiting)[:200]))
            waiting -= {wid for wid, ok in zip(list(waiting)[:200], done, strict=True) if ok}
            if waiting:
                await asyncio.sleep(0.2)
        all_parked = time.perf_counter() - t0
    await asyncio.sleep(5)
    rss_parked, cpu0, store0 = rss_mib(server.pid), server.cpu(), server.store_state()
    await asyncio.sleep(idle_s)
    store1 = server.store_state()
    return {"parked": n, "start_accept_s": round(accepted, 2), "all_parked_s": round(all_parked, 2),
            "server_rss_mib_parked": round(rss_parked, 1), "idle_window_s": idle_s,
            "server_idle_cpu_s": round(server.cpu() - cpu0, 2),
            "journal_written_while_idle": None if store0 is None else store0 != store1}


PHASES = ("w1", "w2", "w2-local", "w2-sticky", "w3", "w4")


def run_workloads(build: str, database: str | None, phases: tuple[str, ...], scale: float = 1.0, idle_s: float = 70.0) -> dict[str, Any]:
    """One round of the chosen phases against a fresh server of ``build``; a JSON-able report."""
    report: dict[str, Any] = {"build": build, "journal": "postgresql" if database else "sqlite", "phases": {}}
    n1, n2, n3, n4 = (max(10, int(x * scale)) for x in (1000, 200, 200, 1000))
    with Server(build=build, database=database) as server:
        for phase in phases:
            tq = f"bench-{phase}-{uuid.uuid4().hex[:6]}"
            with WorkerProcess(server.url, tq, sticky=phase == "w2-sticky") as worker:
                if phase == "w1":
                    asyncio.run(_run_many(server.url, tq, "bw_hello", 50, 50, lambda i: [f"n{i}"], lambda i: f"hello n{i}"))  # warm-up
                with Meter(server, worker) as meter:
                    if phase == "w1":
                        out = asyncio.run(_run_many(server.url, tq, "bw_hello", n1, 50, lambda i: [f"n{i}"], lambda i: f"hello n{i}"))
                    elif phase.startswith("w2"):
                        local = phase == "w2-local"
                        expect = "x" + "".join(f"|s{i}" for i in range(10))
                        out = asyncio.run(_run_many(
                            server.url, tq, "bw_chain", n2, 20, lambda i, local=local: ["x", local], lambda i, expect=expect: expect,
                        ))
                    elif phase == "w3":
                        out = asyncio.run(_w3(server.url, tq, n3))
                    else:
                        out = asyncio.run(_w4(server.url, tq, n4, server, idle_s))
                report["phases"][phase] = {**out, **meter.report()}
        report["server_rss_mib_end"] = round(rss_mib(server.pid), 1)
    return report
