"""The workflow under test, its activities, the result it must return, and the harness's
record of one instance of it (what the SDK acknowledged, and when)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from durable_workflow import ActivityRetryPolicy, activity, workflow

WORKFLOW_TYPE = "nemesis_order"
SIGNAL_NAME = "proceed"

# Activities never fail on their own; the policy only matters if the server times an attempt
# out. Retrying generously keeps "the server lost an attempt" from turning into a failed run
# that would be reported as a wrong result instead of a delay.
_ACTIVITY_RETRY = ActivityRetryPolicy(
    max_attempts=100, initial_interval_seconds=0.5, backoff_coefficient=1.5, maximum_interval_seconds=2
)


@activity.defn(name="nemesis_reserve")
def reserve(n: int) -> int:
    """First step: a value derived from the input, so a result from another run is detectable."""
    return n * 3 + 1


@activity.defn(name="nemesis_confirm")
def confirm(reserved: int, token: str) -> str:
    """Second step: combines the first step's result with the signal's payload."""
    return f"{reserved}:{token}"


@workflow.defn(name=WORKFLOW_TYPE)
class NemesisOrder:
    """Activity, 1 s durable timer, a signal awaited with ``wait_condition``, a second activity."""

    def __init__(self) -> None:
        self.token: str | None = None

    @workflow.signal(SIGNAL_NAME)
    def proceed(self, token: str) -> None:
        self.token = token

    def run(self, ctx: Any, n: int) -> Generator[Any, Any, dict[str, Any]]:
        reserved = yield ctx.schedule_activity("nemesis_reserve", [n], retry_policy=_ACTIVITY_RETRY)
        yield ctx.sleep(1)
        yield ctx.wait_condition(lambda: self.token is not None, key="proceed")
        confirmed = yield ctx.schedule_activity("nemesis_confirm", [reserved, self.token], retry_policy=_ACTIVITY_RETRY)
        return {"n": n, "reserved": reserved, "confirmed": confirmed}


def expected_result(n: int, token: str) -> dict[str, Any]:
    """What ``NemesisOrder`` must return for input ``n`` and signal payload ``token``."""
    return {"n": n, "reserved": n * 3 + 1, "confirmed": f"{n * 3 + 1}:{token}"}


@dataclass
class WorkflowRecord:
    """One workflow the starter submitted: its input, and the run times (seconds since the run
    began) at which its start and signal were acknowledged and its completion was observed."""

    workflow_id: str
    n: int
    token: str
    request_id: str
    first_node: int
    submitted_at: float
    start_acked_at: float | None = None
    run_id: str | None = None
    signal_acked_at: float | None = None
    signal_command_id: str | None = None
    signal_gave_up: bool = False
    start_gave_up: bool = False
    completed_seen_at: float | None = None
    last_polled: float = 0.0
    closed_status: str | None = None
