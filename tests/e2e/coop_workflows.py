"""Workflows and activities for the cooperative-cancellation tests, in a module of their own:
a cooperative worker runs each activity in a spawned process, which imports its handler by
module and name (a test module would drag pytest into every child)."""

from __future__ import annotations

import asyncio

from durable_workflow import activity, workflow
from durable_workflow.errors import WorkflowCancelled


@activity.defn(name="coop_beat")
async def coop_beat() -> str:
    for i in range(600):  # far longer than any test waits: only a cancellation ends it early
        await activity.context().heartbeat({"i": i})
        await asyncio.sleep(0.2)
    return "finished"


@activity.defn(name="coop_quick")
async def coop_quick(name: str) -> str:
    return f"cleanup {name}"


@workflow.defn(name="coop_timer")
class CoopTimer:
    def run(self, ctx):  # type: ignore[no-untyped-def]
        try:
            yield ctx.start_timer(3600)
        except WorkflowCancelled as exc:
            with ctx.cancellation_shield():
                done = yield ctx.schedule_activity("coop_quick", [exc.context.reason if exc.context else "?"])
            return done
        return "fired"


@workflow.defn(name="coop_activity")
class CoopActivity:
    def run(self, ctx):  # type: ignore[no-untyped-def]
        return (yield ctx.schedule_activity("coop_beat", [], start_to_close_timeout=300, heartbeat_timeout=30))


@workflow.defn(name="coop_waiting_activity")
class CoopWaitingActivity:
    def run(self, ctx):  # type: ignore[no-untyped-def]
        try:
            yield ctx.schedule_activity("coop_beat", [], start_to_close_timeout=300, heartbeat_timeout=30,
                                        cancellation_policy="wait_cancellation_completed")
        except WorkflowCancelled:
            return "stopped, then cleaned"
        return "unexpected"


@workflow.defn(name="coop_condition")
class CoopCondition:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal("go")
    def on_go(self) -> None:
        self.go = True

    def run(self, ctx):  # type: ignore[no-untyped-def]
        try:
            yield ctx.wait_condition(lambda: self.go, key="go", timeout=3600)
        except WorkflowCancelled:
            return "cancelled while waiting"
        return "signalled"


WORKFLOWS = [CoopTimer, CoopActivity, CoopWaitingActivity, CoopCondition]
ACTIVITIES = [coop_beat, coop_quick]
