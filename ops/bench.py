"""Benchmarks against a running dw-server, driven by the official SDK (not a test).

    python -m ops.bench hello --url http://127.0.0.1:8080 -n 1000 -c 50
    python -m ops.bench workloads [--phases w1,w3] [--compare /tmp/before --rounds 3]
    python -m ops.bench requests -n 2000 [--compare /tmp/before --rounds 3]
    python -m ops.bench scale --parked 100000 --flood 10000
    python -m ops.bench floor -n 2000
    python -m ops.bench activities --server -n 1000 -c 50

``workloads`` is W1–W4 of the side-by-side harness (ops/bench_workloads.py), ``requests`` the
server CPU per request of each kind (ops/bench_requests.py); with ``--compare <checkout>`` both
measure that build and this one in interleaved rounds and print the ratios (ops/bench_compare.py).

``hello`` starts N workflows of one activity each, at most C in flight, with one
SDK worker process serving them, and prints workflows/s and start→result p50/p99.
With ``--server`` it starts its own dw-server on a fresh data directory and also
reports the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime

from durable_workflow import Client, activity, workflow

from .bench_procs import Server, cpu_seconds, pct, serve_worker
from .bench_workloads import PHASES, run_workloads


@activity.defn(name="bench_hello")
def bench_hello(name: str) -> str:
    return f"hello, {name}"


@workflow.defn(name="bench_hello_workflow")
class HelloWorkflow:
    def run(self, ctx, name):
        return (yield ctx.schedule_activity("bench_hello", [name]))


def _worker_main(
    url: str, task_queue: str, ready: multiprocessing.Event, stop: multiprocessing.Event, slots: int, token: str | None = None
) -> None:
    serve_worker(
        url, ready, stop, token, task_queue=task_queue, workflows=[HelloWorkflow], activities=[bench_hello], poll_timeout=5,
        max_concurrent_workflow_tasks=slots, max_concurrent_activity_tasks=slots,
    )


async def _drive(
    url: str, task_queue: str, n: int, concurrency: int, poll_interval: float, token: str | None = None
) -> tuple[float, list[float], list[float]]:
    latencies: list[float] = []
    handles: list[tuple[str, str]] = []
    sem = asyncio.Semaphore(concurrency)
    run_id = uuid.uuid4().hex[:8]

    async with Client(url, token=token) as client:

        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                handle = await client.start_workflow(
                    workflow_type="bench_hello_workflow", workflow_id=f"bench-{run_id}-{i}", task_queue=task_queue,
                    input=[str(i)],
                )
                result = await client.get_workflow_handle(handle.workflow_id).result(timeout=120, poll_interval=poll_interval)
                assert result == f"hello, {i}", result
                latencies.append(time.perf_counter() - t0)
                handles.append((handle.workflow_id, handle.run_id or ""))

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
        engine: list[float] = []
        for workflow_id, run_id in handles:  # after the timed part: how long the server itself took
            events = (await client.get_history(workflow_id, run_id, page_size=100))["events"]
            stamps = [datetime.fromisoformat(e["recorded_at"].replace("Z", "+00:00")).timestamp() for e in events]
            engine.append(stamps[-1] - stamps[0])
        return elapsed, latencies, engine


class _RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                return
            self.done.wait(0.2)


def _start_server(
    database: str | None, token: str | None = None, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    env = {**({"DW_AUTH_DRIVER": "token", "DW_AUTH_TOKEN": token} if token else {}), **(extra_env or {})}
    server = Server(database=database, env=env)
    server.start()
    assert server.proc is not None
    return server.proc, server.url


def hello(args: argparse.Namespace) -> dict[str, object]:
    proc = None
    url = args.url
    sampler = None
    if args.server:
        proc, url = _start_server(args.database, args.token)
        sampler = _RssSampler(proc.pid)
        sampler.start()
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    workers = []
    for _ in range(args.workers):
        ready = ctx.Event()
        proc_w = ctx.Process(target=_worker_main, args=(url, task_queue, ready, stop, args.concurrency, args.token))
        proc_w.start()
        ready.wait(30)
        workers.append(proc_w)
    try:
        if args.warmup:
            asyncio.run(_drive(url, task_queue, args.warmup, args.concurrency, args.poll_interval, args.token))
        cpu_before = cpu_seconds(proc.pid) if proc is not None else 0.0
        worker_before, client_before = sum(cpu_seconds(w.pid) for w in workers), time.process_time()
        elapsed, latencies, engine = asyncio.run(
            _drive(url, task_queue, args.n, args.concurrency, args.poll_interval, args.token)
        )
        cpu_used = cpu_seconds(proc.pid) - cpu_before if proc is not None else 0.0
        worker_cpu = sum(cpu_seconds(w.pid) for w in workers) - worker_before
        client_cpu = time.process_time() - client_before
    finally:
        stop.set()
        for w in workers:
            w.join(60)
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if sampler is not None:
            sampler.done.set()
    report: dict[str, object] = {
        "workload": "hello",
        "journal": "postgresql" if args.database else "sqlite",
        "auth": "token" if args.token else "none",
        "workflows": args.n,
        "concurrency": args.concurrency,
        "sdk_worker_processes": args.workers,
        "result_poll_interval_s": args.poll_interval,
        "elapsed_s": round(elapsed, 2),
        "workflows_per_s": round(args.n / elapsed, 1),
        "p50_ms": round(pct(latencies, 0.50) * 1000, 1),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "server_start_to_close_p50_ms": round(pct(engine, 0.50) * 1000, 1),
        "server_start_to_close_p99_ms": round(pct(engine, 0.99) * 1000, 1),
        "sdk_worker_cpu_ms_per_workflow": round(worker_cpu / args.n * 1000, 2),
        "sdk_client_cpu_ms_per_workflow": round(client_cpu / args.n * 1000, 2),
    }
    if sampler is not None:
        report["server_peak_rss_mib"] = round(sampler.peak_kib / 1024, 1)
        report["server_cpu_ms_per_workflow"] = round(cpu_used / args.n * 1000, 2)
    return report


def _suite(args: argparse.Namespace) -> int:
    from .bench_compare import compare, render
    from .bench_procs import HERE
    from .bench_requests import run_requests

    def run(build: str) -> dict[str, object]:
        if args.workload == "requests":
            return run_requests(build, args.database, args.n)
        return run_workloads(build, args.database, tuple(args.phases.split(",")), args.scale, args.idle)

    if args.compare is None:
        print(json.dumps(run(HERE), indent=2))
        return 0
    result = compare(run, os.path.abspath(args.compare), HERE, args.rounds)
    print(render(result))
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench")
    sub = parser.add_subparsers(dest="workload", required=True)
    p = sub.add_parser("hello", help="N workflows of one activity each")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--server", action="store_true", help="start a dw-server on a fresh data dir and report its peak RSS")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("-c", "--concurrency", type=int, default=50)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--workers", type=int, default=1, help="SDK worker processes")
    p.add_argument("--database", default=None, help="with --server: run it on this PostgreSQL database (fresh schema)")
    p.add_argument("--poll-interval", type=float, default=0.05, help="SDK result() polling interval")
    p.add_argument("--token", default=None, help="with --server: run it with DW_AUTH_DRIVER=token and this token")
    p = sub.add_parser("list", help="list-workflows latency with many runs in PostgreSQL")
    p.add_argument("--database", required=True, help="a PostgreSQL database (a fresh schema is created and dropped)")
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--samples", type=int, default=50)
    p = sub.add_parser("interact", help="query and update round trips with one SDK worker")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--server", action="store_true", help="start a dw-server on a fresh data dir")
    p.add_argument("--database", default=None, help="with --server: run it on this PostgreSQL database")
    p.add_argument("-n", type=int, default=200)
    p = sub.add_parser("streams", help="message-stream and workflow-stream round trips with one SDK worker")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--server", action="store_true", help="start a dw-server on a fresh data dir")
    p.add_argument("--database", default=None, help="with --server: run it on this PostgreSQL database")
    p.add_argument("-n", type=int, default=200)
    p = sub.add_parser("activities", help="standalone activities: starts/s and start->result with one SDK worker")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--server", action="store_true", help="start a dw-server on a fresh data dir")
    p.add_argument("--database", default=None, help="with --server: run it on this PostgreSQL database")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("-c", "--concurrency", type=int, default=50)
    p = sub.add_parser("signed", help="signed requests (each a first use for the replay cache) per second")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--server", action="store_true", help="start a dw-server on a fresh data dir")
    p.add_argument("--database", default=None, help="with --server: run it on this PostgreSQL database")
    p.add_argument("--no-sign", action="store_true", help="the none driver, for comparison")
    p.add_argument("-n", type=int, default=3000)
    p.add_argument("-c", "--concurrency", type=int, default=20)
    p = sub.add_parser("workloads", help="W1-W4 through the SDK, server/worker/client CPU per phase")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every N (0.1 for a quick look)")
    p.add_argument("--idle", type=float, default=70.0, help="W4's idle window, seconds")
    p = sub.add_parser("scale", help="RSS with many parked runs; W3 latency while one run absorbs a signal flood")
    p.add_argument("--parked", type=int, default=100_000, help="runs to park (0: skip)")
    p.add_argument("--flood", type=int, default=10_000, help="signals into one run (0: skip)")
    p.add_argument("--signals", type=int, default=200, help="W3 signals measured alone and during the flood")
    p.add_argument("--idle", type=float, default=70.0, help="idle window with every run parked, seconds")
    p.add_argument("--database", default=None, help="run the server on this PostgreSQL database")
    p = sub.add_parser("floor", help="server CPU per request of a trivial route on the same stack (the target's floor)")
    p.add_argument("-n", type=int, default=2000)
    p = sub.add_parser("requests", help="server CPU per request, per kind of request")
    p.add_argument("-n", type=int, default=2000, help="requests of each kind")
    for name in ("workloads", "requests"):
        p = sub.choices[name]
        p.add_argument("--database", default=None, help="run the server(s) on this PostgreSQL database")
        p.add_argument("--compare", default=None, metavar="CHECKOUT", help="also measure this build; print ratios")
        p.add_argument("--rounds", type=int, default=1, help="with --compare: interleaved rounds per build")
    args = parser.parse_args(argv)
    if args.workload in ("workloads", "requests"):
        return _suite(args)
    if args.workload == "floor":
        from .bench_floor import run_floor

        print(json.dumps(run_floor(args.n), indent=2))
        return 0
    if args.workload == "scale":
        from .bench_procs import HERE
        from .bench_scale import run_scale

        print(json.dumps(run_scale(HERE, args.database, args.parked, args.flood, args.signals, args.idle), indent=2))
        return 0
    if args.workload == "signed":
        from .bench_signed import KEY, signed_bench

        env = {} if args.no_sign else {"DW_AUTH_DRIVER": "signature", "DW_OPERATOR_SIGNATURE_KEY": KEY}
        proc, url = _start_server(args.database, extra_env=env) if args.server else (None, args.url)
        try:
            print(json.dumps(asyncio.run(signed_bench(url, args.n, args.concurrency, not args.no_sign)), indent=2))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        return 0
    if args.workload == "activities":
        from .bench_activities import activities

        proc, url = _start_server(args.database) if args.server else (None, args.url)
        try:
            print(json.dumps(activities(url, args.n, args.concurrency), indent=2))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        return 0
    if args.workload in ("interact", "streams"):
        from .bench_interact import interact
        from .bench_streams import streams

        proc, url = _start_server(args.database) if args.server else (None, args.url)
        try:
            print(json.dumps((interact if args.workload == "interact" else streams)(url, args.n), indent=2))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        return 0
    if args.workload == "list":
        from .bench_list import list_bench

        print(json.dumps(list_bench(args.database, args.runs, args.samples), indent=2))
        return 0
    print(json.dumps(hello(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
