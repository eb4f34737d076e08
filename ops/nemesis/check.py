"""The read-back: every acknowledged workflow described and its full history read (through
any node, within one shared deadline), then judged; the counts go into the result."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from durable_workflow import Client, WorkflowNotFound

from ops.nemesis.judge import judge
from ops.nemesis.operations import GaveUp, Operations
from ops.nemesis.state import RunState
from ops.nemesis.workload import WorkflowRecord


class Check:
    """One read-back: the violations counted so far (with a few example workflow ids each)."""

    def __init__(self, run: RunState, ops: Operations) -> None:
        self.run = run
        self.ops = ops
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.sem = asyncio.Semaphore(6)
        self.check_time = run.now()
        self.check_end = time.monotonic() + run.cfg.check_seconds

    def remaining(self) -> float:
        """Every read shares one deadline: a cluster that cannot answer makes the check
        report unreadable workflows, not run for an hour."""
        return max(1.0, self.check_end - time.monotonic())

    def bad(self, kind: str, rec: WorkflowRecord, note: str = "") -> None:
        self.counts[kind] += 1
        if len(self.examples.setdefault(kind, [])) < 5:
            self.examples[kind].append(rec.workflow_id + (f" ({note})" if note else ""))

    async def describe_or_none(self, wid: str, node: int) -> Any:
        async def fn(client: Client) -> Any:
            try:
                return await client.describe_workflow(wid)
            except WorkflowNotFound:
                return None

        return await self.ops.call("check", wid, node, fn, deadline=self.remaining())

    async def history(self, wid: str, run_id: str, node: int) -> list[dict[str, Any]]:
        async def fn(client: Client) -> list[dict[str, Any]]:
            events: list[dict[str, Any]] = []
            token = None
            while True:
                page = await client.get_history(wid, run_id, page_size=1000, next_page_token=token)
                events += page["events"]
                token = page.get("next_page_token")
                if not token:
                    return events

        return await self.ops.call("check", wid, node, fn, deadline=self.remaining())

    async def check_one(self, rec: WorkflowRecord) -> None:
        nodes = len(self.run.nodes)
        async with self.sem:
            node = rec.n % nodes
            try:
                described = await self.describe_or_none(rec.workflow_id, node)
                if described is None:  # ask another node before calling it lost
                    await asyncio.sleep(1)
                    described = await self.describe_or_none(rec.workflow_id, (node + 1) % nodes)
                if described is None:
                    self.bad("lost_starts", rec, "describe: not found on two nodes")
                    return
                events = await self.history(rec.workflow_id, described.run_id, node)
            except GaveUp as exc:
                self.bad("unreadable", rec, str(exc)[:120])
                return
        judge(self.run, rec, described, events, self.check_time, self.bad)


async def check(run: RunState) -> None:
    """Read every acknowledged workflow back and count the violations."""
    assert run.ops is not None
    read_back = Check(run, run.ops)
    await asyncio.gather(*(read_back.check_one(r) for r in run.records.values() if r.start_acked_at is not None))
    run.result.counts = dict(read_back.counts)
    run.result.examples = read_back.examples
