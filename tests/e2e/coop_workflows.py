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


@workflow.defn(name="coop_child")
class CoopChild:
    """A child that waits until a cooperative request reaches it, then cleans up for a moment."""

    def run(self, ctx):  # type: ignore[no-untyped-def]
        try:
            yield ctx.start_timer(3600)
        except WorkflowCancelled as exc:
            with ctx.cancellation_shield():
                yield ctx.start_timer(1)  # cleanup that takes a while: the parent's wait must span it
            context = exc.context
            return {"parent_request_id": context.parent_request_id if context else None,
                    "lineage": len(context.lineage) if context and context.lineage else 0}
        return "fired"


@workflow.defn(name="coop_parent")
class CoopParent:
    """Starts a child with the given cancellation and parent-close policies and waits for it."""

    def run(self, ctx, cancellation_policy, parent_close_policy="abandon"):  # type: ignore[no-untyped-def]
        try:
            return (yield ctx.start_child_workflow("coop_child", [], cancellation_policy=cancellation_policy,
                                                   parent_close_policy=parent_close_policy))
        except WorkflowCancelled:
            return "parent stopped"


WORKFLOWS = [CoopTimer, CoopActivity, CoopWaitingActivity, CoopCondition, CoopChild, CoopParent]
ACTIVITIES = [coop_beat, coop_quick]
