"""Closing a run from outside its workflow code: the open steps are cancelled first, then the
terminal event, then the effects on its children and parent (worker-plane §10.9).

Shared by the decisions that can end a run this way: cancel and terminate, a run or execution
timeout, the cleanup deadline of a cooperative cancellation, and a workflow that lets a
delivered cooperative cancellation propagate.
"""

from __future__ import annotations

from typing import Any

from persistence.ids import iso

from .emit import Effect, Emitter, par_fields
from .run_state import PARENT_CLOSE_ACTIONS, RunState


def timer_payload(timer: Any, extra: dict[str, Any]) -> dict[str, Any]:
    p = {"sequence": timer.seq, "timer_id": timer.timer_id, "delay_seconds": timer.delay, "fire_at": iso(timer.fire_at)}
    p.update(timer.extra)
    p.update(par_fields(timer.parallel))
    p.update(extra)
    return p


def close_run(
    state: RunState, em: Emitter, terminal: str, payload: dict[str, Any], command_id: str | None = None, *, effects: bool = True
) -> None:
    """``effects``: False when the caller applies ``closure_effects`` itself (a task completion)."""
    for act in sorted(state.activities.values(), key=lambda a: a.seq):
        em.event(
            "ActivityCancelled",
            {
                "sequence": act.seq,
                "activity_execution_id": act.exec_id,
                "activity_attempt_id": act.attempt_id(),
                "activity_type": act.activity_type,
                "attempt_number": act.attempt_number,
                "cancelled_at": em.ts(),
                **par_fields(act.parallel),
            },
        )
    for timer in sorted(state.timers.values(), key=lambda t: t.seq):
        em.event("TimerCancelled", timer_payload(timer, {"cancelled_at": em.ts()}))
    em.event(terminal, payload, command_id=command_id)
    if effects:
        closure_effects(state, em)


def closure_effects(state: RunState, em: Emitter) -> None:
    """Parent-close policies for open children, and the parent's view of this run."""
    for child in state.children.values():
        if child.policy in PARENT_CLOSE_ACTIONS:
            em.effects.append(Effect("close_child", child.run_id, {"policy": child.policy, "seq": child.seq}))
    parent = state.meta.get("parent")
    if parent:
        em.effects.append(Effect("notify_parent", parent["run_id"], {"child_run_id": state.run_id}))
