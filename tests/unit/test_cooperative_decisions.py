"""Cooperative cancellation decided and folded by hand (extended spec §5): the request, the
delivery at each kind of boundary, the activity policies, the close as cancelled and the
cleanup deadline. No I/O: ``Run`` folds what each decision emits, as the actor does."""

from __future__ import annotations

import pytest

from actors import decide_activity, decide_time
from actors import decide_cancellation as dc
from actors.commands import CommandError
from actors.emit import Emitter
from actors.errors import ProtocolError
from actors.run_state import RunState
from tests.unit.test_fold_and_decide import ACT_OWNER, T0, Run, activity, open_wait, types


def _requested(commands: list[dict], *, claim_activity: bool = False, cleanup: int = 60) -> Run:
    run = Run()
    run.turn(commands, T0 + 1)
    if claim_activity:
        run.act_claim(1, T0 + 2)
    run.commit(dc.request(run.state, "req-1", "asked", cleanup, T0 + 3))
    run.claim(T0 + 4)
    return run


def _deliver(run: Run, sequence: int, kind: str, span: int | None = None, now: float = T0 + 5) -> dict:
    body = {"request_id": "req-1", "sequence": sequence, "call_kind": kind, **({"sequence_span": span} if span else {})}
    wt = run.state.wt
    assert wt is not None
    em, reply = dc.deliver(run.state, wt.task_id, dc.parse_delivery(body), now)
    run.commit(em)
    return reply


def test_a_request_is_recorded_once_wakes_the_run_and_is_observed_identically_every_time() -> None:
    run = Run()
    run.turn([{"type": "start_timer", "delay_seconds": 500}], T0 + 1)
    assert run.state.wt is None
    records = run.commit(dc.request(run.state, "req-1", "asked", 60, T0 + 3))
    assert types(records) == ["CooperativeCancellationRequested"]
    event = run.state.events[-1]
    assert event["workflow_command_id"] == "req-1", "the envelope names the request (the SDK checks it)"
    context = event["payload"]["cancellation"]
    assert context["lineage"][-1]["workflow_run_id"] == run.state.run_id and context["parent_request_id"] is None
    assert event["payload"]["cleanup_deadline_at"] == context["cleanup_deadline_at"] > context["requested_at"]
    assert run.state.wt is not None and run.state.wt.status == "ready", "a task is ready even without an open wait"
    first = dc.observation(run.state)
    assert first == dc.observation(run.state) and first is not None
    assert first["request_id"] == "req-1" and first["history_refresh_page_token"] == "MA=="


def test_a_timer_boundary_records_the_delivery_then_cancels_the_timer_and_moves_the_claim_horizon() -> None:
    run = _requested([{"type": "start_timer", "delay_seconds": 500}])
    wt = run.state.wt
    assert wt is not None
    reply = _deliver(run, 1, "timer")
    assert reply["delivered"] is True and reply["duplicate"] is False and reply["sequence_span"] == 1
    assert reply["operation_sequence_span"] == 1 and reply["claim_released"] is False
    assert types(run.last.records) == ["CooperativeCancellationDelivered", "TimerCancelled"]  # type: ignore[union-attr]
    assert not run.state.timers
    assert wt.snapshot == run.state.next_h - 1, "the claim's history pages reach the delivery"
    again = _deliver(run, 1, "timer")
    assert again["duplicate"] is True and again["history_event_id"] == reply["history_event_id"]
    with pytest.raises(CommandError) as info:
        _deliver(run, 2, "timer")
    assert info.value.reason == "cancellation_already_delivered"


def test_an_unscheduled_boundary_is_reserved_and_a_boundary_past_it_is_refused() -> None:
    run = _requested([{"type": "start_timer", "delay_seconds": 500}])
    with pytest.raises(CommandError) as info:
        _deliver(run, 3, "activity")
    assert info.value.reason == "cancellation_boundary_mismatch"
    _deliver(run, 2, "activity")
    assert run.state.step_seq == 2, "the delivered step is taken: the next command is step 3"


def test_a_condition_boundary_closes_the_wait_and_its_timeout() -> None:
    run = _requested([open_wait(timeout=600)])
    assert run.state.cond is not None
    _deliver(run, 1, "condition")
    assert run.state.cond is None and not run.state.timers


def test_try_cancel_stops_a_running_attempt_whose_late_outcome_is_then_ignored() -> None:
    run = _requested([activity()], claim_activity=True)
    act = run.state.activities[1]
    attempt = act.attempt_id()
    _deliver(run, 1, "activity")
    assert 1 not in run.state.activities
    status = dc.stopped_status(run.state, act.task_id, attempt, ACT_OWNER)
    assert status is not None and status["cancel_requested"] is True and status["can_continue"] is False
    ack = status["cancellation_acknowledgement"]
    assert ack["request_id"] == "req-1" and ack["cancellation_history_event_id"].startswith(run.state.run_id)
    assert dc.stopped_status(run.state, act.task_id, attempt, "someone-else") is None
    with pytest.raises(ProtocolError) as info:
        decide_activity.guard(run.state, act.task_id, attempt, ACT_OWNER, "completed")
    assert info.value.reason == "activity_cancelled" and info.value.extra["outcome"] == "ignored"


def test_wait_cancellation_completed_releases_the_claim_until_the_attempt_stops() -> None:
    run = _requested([activity(cancellation_policy="wait_cancellation_completed")], claim_activity=True)
    assert run.state.events[2]["payload"]["cancellation_policy"] == "wait_cancellation_completed"
    reply = _deliver(run, 1, "activity")
    assert reply["delivered"] is False and reply["reason"] == "cancellation_waiting_for_activity"
    assert reply["claim_released"] is True and reply["sequence"] is None
    assert run.state.wt is None and not types(run.last.records), "nothing in history until the attempt stops"  # type: ignore[union-attr]
    act = run.state.activities[1]
    assert dc.waiting_status(run.state, act) is not None
    em = Emitter(run.state, T0 + 6)
    dc.stop_activity(em, act, "req-1", acknowledged=True)
    run.commit(em)
    assert run.state.wt is not None and run.state.wt.status == "ready", "the next task delivers"
    run.claim(T0 + 7)
    assert _deliver(run, 1, "activity", now=T0 + 7)["delivered"] is True


def test_abandon_leaves_the_attempt_running_and_keeps_its_outcome_out_of_history() -> None:
    run = _requested([activity(cancellation_policy="abandon", schedule_to_close_timeout=100)], claim_activity=True)
    attempt = run.state.activities[1].attempt_number
    _deliver(run, 1, "activity")
    assert 1 not in run.state.activities and run.state.late_outcomes[1] == attempt
    assert "ActivityCancelled" not in types(run.last.records)  # type: ignore[union-attr]


def test_an_uncaught_delivered_request_closes_the_run_cancelled_and_an_undelivered_one_fails_it() -> None:
    run = _requested([activity()], claim_activity=True)
    _deliver(run, 1, "activity")
    records = run.complete([{"type": "fail_workflow", "message": "workflow cancellation was requested",
                             "exception_type": "WorkflowCancelled"}], T0 + 6)
    assert run.state.status == "cancelled" and types(records)[-1] == "WorkflowCancelled"
    assert run.state.events[-1]["payload"]["cancellation_request_id"] == "req-1"
    plain = _requested([{"type": "start_timer", "delay_seconds": 500}])
    plain.complete([{"type": "fail_workflow", "message": "boom", "exception_type": "WorkflowCancelled"}], T0 + 6)
    assert plain.state.status == "failed", "without a delivery it is an ordinary failure"


def test_the_cleanup_deadline_closes_a_run_that_did_not_finish() -> None:
    run = _requested([{"type": "start_timer", "delay_seconds": 5000}], cleanup=30)
    assert decide_time.next_deadline(run.state, T0 + 5) == pytest.approx(min(T0 + 33, run.state.wt.lease_expires_at))  # type: ignore[union-attr]
    run.tick(T0 + 34)
    assert run.state.status == "cancelled"
    assert run.state.events[-1]["payload"]["reason"] == "cancellation_cleanup_deadline_expired"


def test_commands_left_before_the_boundary_get_a_next_task_to_deliver_on() -> None:
    run = _requested([{"type": "start_timer", "delay_seconds": 500}])
    run.complete([{"type": "record_side_effect", "result": "wwHioz3/VYAiNwQO"}], T0 + 5)
    assert run.state.wt is not None and run.state.wt.status == "ready"


@pytest.mark.parametrize(("body", "reason"), [
    ({"request_id": "", "sequence": 1, "call_kind": "timer"}, "validation_failed"),
    ({"request_id": "r", "sequence": 0, "call_kind": "timer"}, "validation_failed"),
    ({"request_id": "r", "sequence": True, "call_kind": "timer"}, "validation_failed"),
    ({"request_id": "r", "sequence": 1, "call_kind": "nap"}, "validation_failed"),
    ({"request_id": "r", "sequence": 1, "call_kind": "timer", "sequence_span": None}, "validation_failed"),
    ({"request_id": "r", "sequence": 1, "call_kind": "timer", "sequence_span": 2}, "validation_failed"),
    ({"request_id": "r", "sequence": 1, "call_kind": "parallel", "sequence_span": 1001}, "validation_failed"),
    ({"request_id": "r", "sequence": 1, "call_kind": "selection_handle"}, "cancellation_boundary_unsupported"),
])
def test_a_malformed_delivery_is_refused_before_anything_is_decided(body: dict, reason: str) -> None:
    with pytest.raises(CommandError) as info:
        dc.parse_delivery(body)
    assert info.value.reason == reason


def test_a_delivery_for_another_request_is_refused() -> None:
    run = _requested([{"type": "start_timer", "delay_seconds": 500}])
    wt = run.state.wt
    assert wt is not None
    with pytest.raises(CommandError) as info:
        dc.deliver(run.state, wt.task_id, dc.parse_delivery({"request_id": "other", "sequence": 1, "call_kind": "timer"}), T0 + 5)
    assert info.value.reason == "cancellation_request_mismatch"


def _scheduled(run: Run) -> dict:
    return next(e["payload"] for e in run.state.events if e["event_type"] == "ChildWorkflowScheduled")


def _child(policy: str) -> dict:
    return {"type": "start_child_workflow", "workflow_type": "kid", "cancellation_policy": policy}


def test_try_cancel_at_a_child_boundary_delivers_at_once_and_owes_the_child_a_linked_request() -> None:
    from durable_workflow.cancellation import CancellationContext

    run = _requested([_child("try_cancel")])
    assert _scheduled(run)["cancellation_policy"] == "try_cancel", "echoed on the step's events"
    reply = _deliver(run, 1, "child")
    assert reply["delivered"] is True
    assert [r.kind for r in run.last.records][0] == "coop_child"  # type: ignore[union-attr]
    child = run.state.children[1]
    owed = run.state.child_requests[child.run_id]
    assert owed["parent"]["request_id"] == "req-1" and not owed.get("done")
    kid = RunState(child.run_id, meta={"workflow_id": child.workflow_id})
    request = dc.request(kid, owed["request_id"], owed["reason"], None, T0 + 6, owed["parent"])
    context = request.records[0].payload["cancellation"]
    parsed = CancellationContext.from_dict(context)  # the SDK's own checks of lineage, root and deadline
    assert parsed.parent_request_id == "req-1" and parsed.root_request_id == "req-1" and len(parsed.lineage) == 2
    assert context["cleanup_deadline_at"] <= run.state.coop["cleanup_deadline_at"], "no later than the parent's"  # type: ignore[index]
    em = Emitter(run.state, T0 + 7)
    em.internal("coop_child_done", run=child.run_id, outcome="applied")
    run.commit(em)
    assert run.state.child_requests[child.run_id]["done"] is True
    assert _deliver(run, 1, "child")["duplicate"] is True, "the same boundary again: the first receipt"


def test_wait_cancellation_completed_releases_the_claim_until_the_child_closes() -> None:
    from actors import decide_control

    run = _requested([_child("wait_cancellation_completed")])
    reply = _deliver(run, 1, "child")
    assert reply["delivered"] is False and reply["reason"] == "cancellation_waiting_for_child" and reply["claim_released"]
    assert [r.kind for r in run.last.records] == ["coop_child", "coop_wait"]  # type: ignore[union-attr]
    assert run.state.wt is None
    child = run.state.children[1]
    info = {"event": "WorkflowCompleted", "payload": {"output": "blob"}, "run_id": child.run_id, "closed_at": T0 + 8}
    run.commit(decide_control.child_closed(run.state, 1, info, T0 + 9))
    closed = run.state.events[-1]
    assert closed["event_type"] == "ChildRunCompleted" and closed["payload"]["cancellation_policy"] == "wait_cancellation_completed"
    assert run.state.wt is not None and run.state.wt.status == "ready", "the child closed: a task replays and delivers"
    run.claim(T0 + 10)
    assert _deliver(run, 1, "child", now=T0 + 10)["delivered"] is True


def test_abandon_at_a_child_boundary_leaves_the_child_alone() -> None:
    run = _requested([_child("abandon")])
    assert "cancellation_policy" not in _scheduled(run), "the default is never stored"
    assert _deliver(run, 1, "child")["delivered"] is True
    assert not run.state.child_requests


def test_a_closing_parent_acts_at_once_on_a_request_cancellation_child() -> None:
    """The close's own commit carries the effect (not a later reload or repair pass)."""
    from actors import decide_control

    run = Run()
    run.turn([{"type": "start_child_workflow", "workflow_type": "kid", "parent_close_policy": "request_cancellation"}], T0 + 1)
    em = decide_control.cancel_or_terminate(run.state, "terminate", "operator", "cmd-t", T0 + 2)
    assert [(e.kind, e.data["policy"]) for e in em.effects] == [("close_child", "request_cancellation")]
    run.commit(em)
    assert [p["policy"] for p in run.state.parent_close.values()] == ["request_cancellation"]
