"""Decisions driven by the clock: timers, activity deadlines, leases, run timeouts."""

from __future__ import annotations

from persistence.ids import iso

from . import decide_activity, decide_cancellation, prepared_local
from .closing import close_run, timer_payload
from .emit import Emitter
from .run_state import Activity, RunState


def next_deadline(state: RunState, now: float) -> float | None:
    """The earliest instant at which a tick would have something to do, or None.

    A ready task already waiting for a worker needs no tick (its offer is in the queue),
    and a condition timeout held back by a leased task is covered by the lease expiry;
    counting either would make the timer service spin on a deadline that has passed.
    """
    if not state.is_open:
        return None
    candidates: list[float] = []
    meta = state.meta
    for key in ("execution_deadline", "run_deadline"):
        if meta.get(key):
            candidates.append(meta[key])
    if state.coop is not None:
        candidates.append(state.coop["deadline"])  # the cooperative request's cleanup deadline
    for step in state.locals.values():
        if step.status == "running":
            candidates.extend(step.deadlines.values())  # a prepared local attempt's business deadlines
    wt = state.wt
    leased = wt is not None and wt.status == "leased"
    if wt is not None:
        if leased:
            candidates.append(wt.lease_expires_at)  # type: ignore[arg-type]
        elif wt.available_at > now:
            candidates.append(wt.available_at)
    for timer in state.timers.values():
        if not (timer.kind == "condition" and leased and timer.fire_at <= now):
            candidates.append(timer.fire_at)
    for act in state.activities.values():
        candidates.extend(decide_activity.deadlines(act).values())
        if act.status == "pending":
            if act.available_at > now:
                candidates.append(act.available_at)
        elif act.lease_expires_at is not None:
            candidates.append(act.lease_expires_at)
    return min(candidates) if candidates else None


def tick(state: RunState, now: float) -> Emitter:
    em = Emitter(state, now)
    if not state.is_open:
        return em
    meta = state.meta
    exec_dl, run_dl = meta.get("execution_deadline"), meta.get("run_deadline")
    if (exec_dl and now >= exec_dl) or (run_dl and now >= run_dl):
        kind = "execution_timeout" if exec_dl and now >= exec_dl else "run_timeout"
        deadline = exec_dl if kind == "execution_timeout" else run_dl
        word = "execution" if kind == "execution_timeout" else "run"
        close_run(
            state,
            em,
            "WorkflowTimedOut",
            {
                "failure_id": f"{state.run_id}-timeout",
                "timeout_kind": kind,
                "failure_category": "timeout",
                "message": f"Workflow {word} deadline expired at {iso(deadline)}.",
                "exception_class": "WorkflowTimeoutError",
                "execution_deadline_at": iso(exec_dl),
                "run_deadline_at": iso(run_dl),
            },
        )
        return em
    if decide_cancellation.cleanup_expired(state, now):
        decide_cancellation.close_cancelled(
            state, em, "cancellation_cleanup_deadline_expired",
            "The workflow did not finish its cleanup before the cancellation request's deadline.",
        )
        return em
    wt = state.wt
    leased_ordinary = wt is not None and wt.status == "leased"
    if wt is not None and wt.status == "leased" and now >= (wt.lease_expires_at or 0):
        em.internal("wt_release", task=wt.task_id, reason="lease_expired")
        leased_ordinary = False
    for timer in sorted(state.timers.values(), key=lambda t: (t.fire_at, t.seq)):
        if timer.fire_at > now:
            continue
        if timer.kind == "condition" and leased_ordinary:
            continue  # deferred until the leased task resolves (spec 10.4)
        em.event("TimerFired", timer_payload(timer, {"fired_at": em.ts()}))
    for act in list(state.activities.values()):
        _activity_deadlines(em, act, now)
    for step in prepared_local.due(state, now):
        prepared_local.expire(state, em, step, now)
    return em


def _activity_deadlines(em: Emitter, act: Activity, now: float) -> None:
    due = [(kind, dl) for kind, dl in decide_activity.deadlines(act).items() if dl <= now]
    if due:
        order = ("schedule_to_close", "schedule_to_start", "heartbeat", "start_to_close")
        kind, dl = min(due, key=lambda kv: order.index(kv[0]))
        decide_activity.timeout(em, act, kind, dl)
        return
    if act.status == "running" and act.lease_expires_at is not None and now >= act.lease_expires_at:
        em.internal("act_release", seq=act.seq)
