"""Redrive (extended spec §9.2): continue a run that failed on an activity, reusing the results
of the activities that completed.

The failed run stays as it was. A new run of the same instance opens with ``WorkflowStarted``
(``redriven_from_run_id``) and a copy of the failed run's history up to the failed step's final
resolution — payloads unchanged, sequences renumbered densely — so the worker replays the
completed steps from their copied results. Every activity step left unresolved in the copy gets
a fresh execution with a full retry budget; open timers keep their original ``fire_at``. A copy
that would leave a child, an update or a prepared local step unresolved is refused: those
cannot be resumed from history alone. Plain functions; the actors do the journal reads.
"""

from __future__ import annotations

import copy
from typing import Any

from persistence.vocabulary import activity_execution_id

from .emit import new_run_meta, started_records
from .records import Record, history_event, internal_record
from .run_state import ACTIVITY_RESOLUTIONS, RunState, fold

SKIPPED = ("StartAccepted", "WorkflowStarted")
RESOLVED = (*ACTIVITY_RESOLUTIONS, "ActivityCancelled")


class NotRedrivable(Exception):
    """Why this run cannot be redriven (409 ``run_not_redrivable``)."""


def cut(state: RunState) -> int:
    """The history sequence of the failed step's final resolution: copying stops before it."""
    if state.status != "failed" or state.closed_reason != "failed" or not state.events:
        raise NotRedrivable("Only a run that failed (not timed out, cancelled or terminated) can be redriven.")
    failed = state.events[-1] if state.events[-1]["event_type"] == "WorkflowFailed" else None
    if failed is None:
        failed = next((e for e in reversed(state.events) if e["event_type"] == "WorkflowFailed"), None)
    step = (failed or {}).get("payload", {}).get("failed_step_sequence")
    if step is None:
        raise NotRedrivable("The run did not fail on an activity step (its WorkflowFailed names no failed_step_sequence).")
    resolution = next(
        (e for e in reversed(state.events)
         if e["event_type"] in ("ActivityFailed", "ActivityTimedOut") and e["payload"].get("sequence") == step),
        None,
    )
    if resolution is None:
        raise NotRedrivable(f"The failed step {step} has no ActivityFailed or ActivityTimedOut to continue from.")
    return int(resolution["sequence"])


def copied(records: list[Record], before: int, first: int) -> list[Record]:
    """The failed run's history events below ``before`` (not its opening ones), renumbered from
    ``first``; the start metadata of runs it created is left behind (they exist already)."""
    out = []
    sequence = first
    for record in records:
        if record.sequence is None or record.sequence >= before or record.kind in SKIPPED:
            continue
        extra = {k: v for k, v in record.extra.items() if k != "start"}
        out.append(history_event(record.kind, sequence, record.at, copy.deepcopy(record.payload), extra,
                                 record.workflow_task_id, record.command_id))
        sequence += 1
    return out


def fresh_executions(run_id: str, records: list[Record], at: float) -> list[Record]:
    """An internal ``act_fresh`` for each activity step the copy leaves open: a new execution
    of this run, attempt budget and deadlines from now."""
    scheduled = [r.payload["sequence"] for r in records
                 if r.kind == "ActivityScheduled" and not r.extra.get("local")]
    resolved = {r.payload.get("sequence") for r in records if r.kind in RESOLVED and not r.extra.get("local")}
    return [internal_record("act_fresh", at, seq=seq, exec=activity_execution_id(run_id, seq))
            for seq in scheduled if seq not in resolved]


def new_meta(state: RunState, run_id: str, now: float, before: int) -> dict[str, Any]:
    meta = state.meta
    out = new_run_meta(
        run_id=run_id, namespace=meta["namespace"], workflow_id=meta["workflow_id"], workflow_type=meta["workflow_type"],
        task_queue=meta.get("task_queue"), run_number=meta["run_number"] + 1, arguments=meta.get("arguments"), now=now,
        execution_timeout=meta.get("execution_timeout"), run_timeout=meta.get("run_timeout"),
        execution_deadline=meta.get("execution_deadline"), business_key=meta.get("business_key"), memo=meta.get("memo"),
        search_attributes=state.search_attributes, parent=meta.get("parent"),
        shard=meta.get("shard", 0), shard_count=meta.get("shard_count", 64),
    )
    out["instance_created_at"] = meta.get("instance_created_at", meta["started_at"])
    out["redrive"] = {"from": state.run_id, "before": before}
    for key in ("trace", "compatibility"):
        if meta.get(key):
            out[key] = meta[key]
    return out


def opening(meta: dict[str, Any], old_records: list[Record]) -> list[Record]:
    """The new run's first records: its start, the copied history, fresh executions."""
    records = started_records(meta, meta["started_at"], accepted=False)
    records += copied(old_records, meta["redrive"]["before"], len(records) + 1)
    return records + fresh_executions(meta["run_id"], records, meta["started_at"])


def check(meta: dict[str, Any], old_records: list[Record]) -> None:
    """Fold the new run's opening on a scratch state; refuse what cannot resume from history."""
    trial = RunState(meta["run_id"])
    for record in opening(meta, old_records):
        fold(trial, record)
    if trial.children:
        raise NotRedrivable("The history before the failed step leaves a child workflow unresolved.")
    if any(u.get("status") == "accepted" for u in trial.updates.values()):
        raise NotRedrivable("The history before the failed step leaves an update unresolved.")
    if any(step.status != "closed" for step in trial.locals.values()):
        raise NotRedrivable("The history before the failed step leaves a prepared local activity unresolved.")
    if any(e["event_type"].startswith("ServiceCall") for e in trial.events):
        raise NotRedrivable("The history before the failed step holds a service call.")
