"""Workflows and activities the end-to-end tests run through the official SDK."""

from __future__ import annotations

import collections
import random
import threading
import time

from durable_workflow import ActivityRetryPolicy, NonRetryableError, activity, workflow

ATTEMPTS: collections.Counter[str] = collections.Counter()
_LOCK = threading.Lock()


def bump(key: str) -> int:
    with _LOCK:
        ATTEMPTS[key] += 1
        return ATTEMPTS[key]


@activity.defn(name="greet")
def greet(name: str) -> str:
    return f"hello, {name}"


@activity.defn(name="add")
def add(a: int, b: int) -> int:
    return a + b


@activity.defn(name="slow_square")
def slow_square(n: int) -> int:
    time.sleep(random.uniform(0.0, 0.3))  # members finish out of order
    return n * n


@activity.defn(name="flaky")
def flaky(key: str) -> str:
    n = bump(key)
    if n <= 2:
        raise RuntimeError(f"transient failure {n}")
    return f"ok after {n}"


@activity.defn(name="doomed")
def doomed(key: str) -> str:
    bump(key)
    raise NonRetryableError("card declined")


@activity.defn(name="stalls_once")
def stalls_once(key: str) -> str:
    n = bump(key)
    ctx = activity.context()
    ctx.heartbeat_sync({"attempt": n})
    if n == 1:
        time.sleep(4)  # stops heartbeating: the server must time this attempt out
    return f"attempt {n}"


@workflow.defn(name="one_activity")
class OneActivity:
    def run(self, ctx, name):
        return (yield ctx.schedule_activity("greet", [name]))


@workflow.defn(name="sequential_then_parallel")
class SequentialThenParallel:
    def run(self, ctx):
        total = 0
        for i in range(3):
            total = yield ctx.schedule_activity("add", [total, i + 1])
        squares = yield [ctx.schedule_activity("slow_square", [n]) for n in range(1, 6)]
        return {"sequential": total, "parallel": squares}


@workflow.defn(name="sleeper")
class Sleeper:
    # Signals the cluster tests send only to write to the run (the worker's command contract
    # declares them, so the server accepts them); the workflow ignores them.
    @workflow.signal("warm")
    def warm(self, *args):
        pass

    @workflow.signal("poke")
    def poke(self, *args):
        pass

    def run(self, ctx, seconds):
        started = ctx.now()  # the replay clock comes from WorkflowStarted's recorded_at
        yield ctx.sleep(seconds)
        return f"woke after sleeping from {started.year}"


@workflow.defn(name="approval")
class Approval:
    def __init__(self):
        self.approved_by = None

    @workflow.signal("approve")
    def approve(self, who):
        self.approved_by = who

    def run(self, ctx):
        ok = yield ctx.wait_condition(lambda: self.approved_by is not None, key="approval", timeout=120)
        if not ok:
            return "timed out"
        greeting = yield ctx.schedule_activity("greet", [self.approved_by])
        return greeting


@workflow.defn(name="impatient")
class Impatient:
    def run(self, ctx):
        ok = yield ctx.wait_condition(lambda: False, key="never", timeout=1)
        return "satisfied" if ok else "timed out"


@workflow.defn(name="waiter")
class Waiter:
    @workflow.signal("never")
    def never(self):
        pass

    def run(self, ctx):
        yield ctx.wait_condition(lambda: False, key="forever")
        return "unreachable"


@workflow.defn(name="child_greeter")
class ChildGreeter:
    def run(self, ctx, name):
        return (yield ctx.schedule_activity("greet", [name]))


@workflow.defn(name="parent")
class Parent:
    def run(self, ctx, name):
        child = yield ctx.start_child_workflow("child_greeter", [name])
        return f"child said: {child}"


@workflow.defn(name="parent_of_many")
class ParentOfMany:
    """A child that continues-as-new, a child that fails, and a child left waiting."""

    def run(self, ctx, policy):
        counted = yield ctx.start_child_workflow("counter", [0, 2])
        try:
            yield ctx.start_child_workflow("raiser", [])
            failed = "no error"
        except Exception as exc:  # ChildWorkflowFailed
            failed = type(exc).__name__
        if policy:
            yield ctx.start_child_workflow("waiter", [], parent_close_policy=policy)
        return {"counted": counted, "failed": failed}


@workflow.defn(name="counter")
class Counter:
    def run(self, ctx, n, limit):
        if n < limit:
            return ctx.continue_as_new(n + 1, limit)
        return f"finished at {n}"


@workflow.defn(name="retrying")
class Retrying:
    def run(self, ctx, key):
        policy = ActivityRetryPolicy(max_attempts=5, initial_interval_seconds=0.5, backoff_coefficient=1.0)
        return (yield ctx.schedule_activity("flaky", [key], retry_policy=policy))


@workflow.defn(name="non_retryable")
class NonRetryable:
    def run(self, ctx, key):
        policy = ActivityRetryPolicy(max_attempts=5, initial_interval_seconds=0.5)
        return (yield ctx.schedule_activity("doomed", [key], retry_policy=policy))


@workflow.defn(name="raiser")
class Raiser:
    def run(self, ctx):
        raise ValueError("workflow gave up")


@workflow.defn(name="markers")
class Markers:
    def __init__(self):
        self.go = False

    @workflow.signal("go")
    def signal_go(self):
        self.go = True

    def run(self, ctx):
        token = yield ctx.side_effect(lambda: random.randint(1, 1_000_000_000))
        version = yield ctx.get_version("fraud-check", 1, 2)
        yield ctx.upsert_search_attributes({"Stage": "waiting"})
        yield ctx.wait_condition(lambda: self.go, key="go")
        return {"token": token, "version": version}


@workflow.defn(name="heartbeat_timeout")
class HeartbeatTimeout:
    def run(self, ctx, key):
        policy = ActivityRetryPolicy(max_attempts=3, initial_interval_seconds=0.5, backoff_coefficient=1.0)
        return (
            yield ctx.schedule_activity(
                "stalls_once", [key], retry_policy=policy, start_to_close_timeout=30, heartbeat_timeout=1
            )
        )


@workflow.defn(name="tagger")
class Tagger:
    """Upserts the search attributes it is given, then finishes."""

    def run(self, ctx, attributes):
        yield ctx.upsert_search_attributes(attributes)
        return sorted(attributes)


@workflow.defn(name="inspectable")
class Inspectable:
    """Answers queries about signals it has received while it waits for three of them."""

    def __init__(self):
        self.stage = "starting"
        self.items = []

    @workflow.signal("add")
    def add(self, item):
        self.items.append(item)

    @workflow.query("status")
    def status(self):
        return {"stage": self.stage, "items": list(self.items)}

    @workflow.update("push")
    def push(self, item):
        if item == "bad":
            raise ValueError("bad items are refused")
        self.items.append(item)
        return len(self.items)

    @workflow.query("item_at")
    def item_at(self, index):
        return self.items[index]

    def run(self, ctx, label):
        self.stage = f"waiting ({label})"
        yield ctx.wait_condition(lambda: len(self.items) >= 3, key="three")
        self.stage = "done"
        return self.items


ALL_WORKFLOWS = [
    OneActivity, ParentOfMany, SequentialThenParallel, Sleeper, Approval, Impatient, Waiter, ChildGreeter, Parent, Counter, Retrying,
    NonRetryable, Raiser, Markers, HeartbeatTimeout, Inspectable, Tagger,
]
ALL_ACTIVITIES = [greet, add, slow_square, flaky, doomed, stalls_once]
