"""Workflows and activities for the prepared-local-activity tests. A prepared callback runs in
a spawned process, so each handler is imported by module and name; the runs are counted in a
file (one line per run) that the test reads, since the processes share nothing else."""

from __future__ import annotations

import asyncio
from pathlib import Path

from durable_workflow import activity, workflow
from durable_workflow.errors import WorkflowCancelled


def _count(ledger: str, key: str) -> int:
    """Append one run of ``key`` to the ledger; how many runs of it there have been."""
    path = Path(ledger)
    with path.open("a") as f:
        f.write(key + "\n")
    return path.read_text().splitlines().count(key)


def runs(ledger: str, key: str) -> int:
    path = Path(ledger)
    return path.read_text().splitlines().count(key) if path.exists() else 0


@activity.defn(name="pla_count")
def pla_count(ledger: str, key: str) -> int:
    return _count(ledger, key)


@activity.defn(name="pla_flaky")
def pla_flaky(ledger: str, key: str) -> str:
    n = _count(ledger, key)
    if n < 2:
        raise RuntimeError(f"transient {n}")
    return f"ok after {n}"


@activity.defn(name="pla_pages")
async def pla_pages(ledger: str, key: str) -> int:
    _count(ledger, key)
    for page in range(3):
        await activity.context().heartbeat({"page": page})
    return 3


@activity.defn(name="pla_forever")
async def pla_forever(ledger: str, key: str) -> str:
    _count(ledger, key)
    await asyncio.sleep(120)
    return "not cancelled"


@activity.defn(name="pla_remote")
def pla_remote(name: str) -> str:
    return f"remote {name}"


@workflow.defn(name="pla_then_remote")
class PreparedThenRemote:
    def run(self, ctx, ledger, key):  # type: ignore[no-untyped-def]
        n = yield ctx.local_activity("pla_count", [ledger, key])
        greeting = yield ctx.schedule_activity("pla_remote", [f"after {n}"])
        return [n, greeting]


@workflow.defn(name="pla_retrying")
class PreparedRetrying:
    def run(self, ctx, ledger, key):  # type: ignore[no-untyped-def]
        return (yield ctx.local_activity("pla_flaky", [ledger, key], retry_policy={"max_attempts": 2, "backoff_seconds": [1]}))


@workflow.defn(name="pla_heartbeats")
class PreparedHeartbeats:
    def run(self, ctx, ledger, key):  # type: ignore[no-untyped-def]
        return (yield ctx.local_activity("pla_pages", [ledger, key], start_to_close_timeout=30, heartbeat_timeout=10))


@workflow.defn(name="pla_after_side_effect")
class PreparedAfterSideEffect:
    def run(self, ctx, ledger, key):  # type: ignore[no-untyped-def]
        token = yield ctx.side_effect(lambda: "tok")
        n = yield ctx.local_activity("pla_count", [ledger, key])
        return [token, n]


@workflow.defn(name="pla_group")
class PreparedGroup:
    def run(self, ctx, ledger, key):  # type: ignore[no-untyped-def]
        return (yield [
            ctx.local_activity("pla_count", [ledger, key + "-a"]),
            ctx.local_activity("pla_count", [ledger, key + "-b"]),
            ctx.schedule_activity("pla_remote", ["member"]),
        ])


@workflow.defn(name="pla_then_wait")
class PreparedThenWait:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal("go")
    def on_go(self) -> None:
        self.go = True

    def run(self, ctx, ledger, key):  # type: ignore[no-untyped-def]
        n = yield ctx.local_activity("pla_count", [ledger, key])
        yield ctx.wait_condition(lambda: self.go, key="go")
        return n


@workflow.defn(name="pla_cancelled")
class PreparedCancelled:
    def run(self, ctx, ledger, key):  # type: ignore[no-untyped-def]
        try:
            yield ctx.local_activity("pla_forever", [ledger, key], start_to_close_timeout=300)
        except WorkflowCancelled:
            return "stopped"
        return "ran out"


WORKFLOWS = [PreparedThenRemote, PreparedRetrying, PreparedHeartbeats, PreparedAfterSideEffect, PreparedGroup,
             PreparedThenWait, PreparedCancelled]
ACTIVITIES = [pla_count, pla_flaky, pla_pages, pla_forever, pla_remote]
