"""The invariants of one acknowledged workflow, judged from its describe and full history:
no gap or duplicate in the history, its signal recorded exactly once with its payload, the
right result, completed in time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from durable_workflow import serializer

from ops.nemesis.state import RunState
from ops.nemesis.workload import SIGNAL_NAME, WorkflowRecord, expected_result

Report = Callable[..., None]  # (kind, record, note="")

# Steps that happen once per workflow: the same (type, step sequence) twice is a duplicate.
ONCE = ("StartAccepted", "WorkflowStarted", "ActivityScheduled", "ActivityCompleted", "TimerScheduled",
        "TimerFired", "WorkflowCompleted", "WorkflowFailed")


def judge(run: RunState, rec: WorkflowRecord, described: Any, events: list[dict[str, Any]], check_time: float,
          bad: Report) -> None:
    """The invariants of one acknowledged workflow, from its describe and full history. Each
    kind of violation counts once per workflow, whatever number of ways it shows."""
    report = once_per_kind(bad)
    if described.run_id != rec.run_id:
        report("run_replaced", rec, f"acknowledged run {rec.run_id}, now {described.run_id}")
    judge_sequences(rec, events, report)
    if rec.signal_acked_at is not None:
        judge_signal(rec, events, report)
    judge_outcome(run, rec, described, events, check_time, report)


def once_per_kind(bad: Report) -> Report:
    """``bad``, passing on only the first report of each kind."""
    seen_kinds: set[str] = set()

    def report(kind: str, rec: WorkflowRecord, note: str = "") -> None:
        if kind not in seen_kinds:
            seen_kinds.add(kind)
            bad(kind, rec, note)

    return report


def judge_sequences(rec: WorkflowRecord, events: list[dict[str, Any]], bad: Report) -> None:
    """Sequences 1..n without a gap or a repeat, and no once-only step recorded twice."""
    seqs = [e.get("sequence") for e in events]
    if len(seqs) != len(set(seqs)):
        bad("duplicate_events", rec, "two events share a sequence")
    elif seqs != list(range(1, len(seqs) + 1)):
        bad("gaps", rec, f"sequences {seqs[:3]}..{seqs[-3:]} of {len(seqs)}")
    steps = [(e["event_type"], (e.get("payload") or {}).get("sequence")) for e in events if e.get("event_type") in ONCE]
    repeated = [s for s, k in Counter(steps).items() if k > 1]
    if repeated:
        bad("duplicate_events", rec, f"repeated steps {repeated[:3]}")


def judge_signal(rec: WorkflowRecord, events: list[dict[str, Any]], bad: Report) -> None:
    """The acknowledged signal: in the history (under its command id), once, with its payload."""
    proceed = [e for e in events if e.get("event_type") == "SignalReceived"
               and (e.get("payload") or {}).get("signal_name") == SIGNAL_NAME]
    commands = {e.get("workflow_command_id") for e in proceed}
    if not proceed or (rec.signal_command_id and rec.signal_command_id not in commands):
        bad("lost_signals", rec, f"acknowledged command {rec.signal_command_id}, history has {sorted(map(str, commands))}")
    elif len(proceed) > 1:
        bad("duplicate_signals", rec, f"{len(proceed)} SignalReceived")
    else:
        payload = proceed[0].get("payload") or {}
        try:
            arguments = serializer.decode(payload.get("arguments"), payload.get("payload_codec"))
        except Exception as exc:  # noqa: BLE001 - an undecodable payload is a wrong payload
            arguments = f"undecodable: {exc}"
        if arguments != [rec.token]:
            bad("wrong_results", rec, f"signal payload {arguments!r}")


def judge_outcome(run: RunState, rec: WorkflowRecord, described: Any, events: list[dict[str, Any]],
                  check_time: float, bad: Report) -> None:
    """Completed, with the expected result, within the completion deadline; counted in the
    result's ``completed`` and ``completed_on_time``."""
    status = described.status
    if status == "completed":
        if described.output != expected_result(rec.n, rec.token):
            bad("wrong_results", rec, f"output {described.output!r}")
        # Observed completion is what a client saw; the history's WorkflowCompleted time (same
        # host clock) bounds it from below, so a monitor that fell behind under load is not
        # mistaken for a late workflow.
        seen = rec.completed_seen_at if rec.completed_seen_at is not None else check_time
        recorded = run.run_time_of(next((e.get("recorded_at") for e in reversed(events)
                                         if e.get("event_type") == "WorkflowCompleted"), None))
        done_at = min(seen, recorded) if recorded is not None else seen
        deadline = max(run.last_fault_end or 0.0, rec.start_acked_at or 0.0) + run.cfg.completion_deadline
        run.result.completed += 1
        if done_at > deadline:
            bad("late", rec, f"completed at t={done_at:.1f}s (observed t={seen:.1f}s), due by t={deadline:.1f}s")
        else:
            run.result.completed_on_time += 1
    elif status in ("running", "pending", "waiting", None):
        last = events[-1]["event_type"] if events else "no events"
        bad("stuck", rec, f"{status}, last event {last}" + (", signal never acknowledged" if rec.signal_gave_up else ""))
    else:
        bad("wrong_results", rec, f"closed as {status}")
