"""Prepared local activities decided and folded by hand (extended spec §2.2–2.5): admission,
control, heartbeats, outcomes and retries, recovery of a lost callback, the sweeper's
deadlines, checkpoints and groups, and a cooperative stop. No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from actors import decide_cancellation as dc
from actors import decide_time
from actors import prepared_local as pl
from actors.errors import CommandError, ProtocolError
from actors.limits import DEFAULT as LIMITS
from tests.unit.test_fold_and_decide import ARGS, RESULT, T0, Run, types

LEASE = 60.0
NONCE = "n" * 64


def desc(name: str = "quote", **extra: Any) -> dict[str, Any]:
    return {"type": "record_local_activity", "activity_type": name, "execution_mode": "local", "arguments": ARGS,
            "payload_codec": "avro", **extra}


def claimed() -> Run:
    run = Run()
    run.claim(T0 + 2)
    return run


def prepare(run: Run, seq: int = 1, now: float = T0 + 3, nonce: str = NONCE, **extra: Any) -> dict[str, Any]:
    d = pl.descriptor(desc(**extra), run.state)
    em, receipt = pl.prepare(run.state, {"sequence": seq, "worker_attempt_id": nonce}, d, now, LEASE)
    if em.records:
        run.commit(em)
    return receipt or pl.admission_receipt(run.state, run.state.locals[seq], now)


def outcome(run: Run, report: dict[str, Any], now: float, seq: int = 1) -> dict[str, Any]:
    step = run.state.locals[seq]
    em = pl.Emitter(run.state, now)
    receipt = pl.resolve(run.state, em, step, pl.parse_report(report), now, LEASE, pl.outcome_receipt(run.state, step))
    run.commit(em)
    return receipt


def test_admission_records_the_step_and_its_attempt_and_answers_what_the_sdk_checks() -> None:
    run = claimed()
    receipt = prepare(run, start_to_close_timeout=30, heartbeat_timeout=5)
    wt = run.state.wt
    assert wt is not None
    assert types(run.last.records) == ["ActivityScheduled", "ActivityStarted"]  # type: ignore[union-attr]
    assert receipt["prepared"] is True and receipt["duplicate"] is False and receipt["reason"] is None
    assert (receipt["workflow_task_id"], receipt["workflow_task_attempt"], receipt["lease_owner"]) == (wt.task_id, wt.attempt, wt.owner)
    assert receipt["worker_attempt_id"] == NONCE and receipt["attempt_number"] == 1
    assert receipt["server_time"] < receipt["heartbeat_deadline_at"] < receipt["start_to_close_deadline_at"]
    assert receipt["schedule_to_close_deadline_at"] is None and receipt["cancellation_cleanup"] is None
    assert receipt["lease_expires_at"] > receipt["server_time"]
    assert wt.snapshot == run.state.next_h - 1 and run.state.step_seq == 1
    again = prepare(run)
    assert again["duplicate"] is True and again["activity_attempt_id"] == receipt["activity_attempt_id"]
    with pytest.raises(ProtocolError) as info:
        prepare(run, seq=3, nonce="other")
    assert info.value.reason == "local_activity_sequence_mismatch"


def test_control_renews_the_claim_and_a_heartbeat_records_progress_and_moves_its_deadline() -> None:
    run = claimed()
    first = prepare(run, heartbeat_timeout=5)
    step = run.state.locals[1]
    assert pl.stop_reason(run.state, step, T0 + 4) is None
    em = pl.Emitter(run.state, T0 + 4)
    event_id = pl.heartbeat(run.state, em, step, {"details": {"page": 1}}, T0 + 4)
    pl.advance_horizon(run.state, em, T0 + 4 + LEASE)
    run.commit(em)
    receipt = pl.control_receipt(run.state, step, T0 + 4, None, heartbeat_event=event_id, renewed=False)
    assert receipt["heartbeat_recorded"] is True and receipt["renewed"] is False and receipt["active"] is True
    assert receipt["heartbeat_deadline_at"] > first["heartbeat_deadline_at"]
    assert run.state.events[-1]["event_type"] == "ActivityHeartbeatRecorded"
    assert pl.stop_reason(run.state, step, T0 + 10) == "heartbeat_deadline_expired"


def test_a_completed_outcome_is_recorded_on_the_live_claim_and_a_repeat_gets_the_same_receipt() -> None:
    run = claimed()
    prepare(run)
    receipt = outcome(run, {"outcome": "completed", "result": RESULT, "payload_codec": "avro"}, T0 + 4)
    assert receipt["event_type"] == "ActivityCompleted" and receipt["claim_released"] is False
    assert receipt["created_task_ids"] == [] and receipt["history_refresh_page_token"] == "MA=="
    assert run.state.events[-1]["id"] == receipt["event_id"] and run.state.wt is not None
    assert run.state.wt.snapshot == run.state.next_h - 1, "the refresh reaches the outcome"
    assert run.state.locals[1].receipt == receipt
    done = run.complete([], T0 + 5)
    assert run.state.status == "waiting" and not types(done), "an empty completion is accepted for a prepared run"


def test_a_retryable_failure_releases_the_claim_and_the_next_task_admits_attempt_two_after_the_backoff() -> None:
    run = claimed()
    prepare(run, retry_policy={"max_attempts": 2, "backoff_seconds": [7]})
    old = run.state.wt
    receipt = outcome(run, {"outcome": "failed", "message": "", "exception_type": "RuntimeError", "non_retryable": False}, T0 + 4)
    assert receipt["event_type"] == "ActivityRetryScheduled" and receipt["claim_released"] is True
    retry = run.state.events[-1]["payload"]
    assert retry["sequence"] == 1 and retry["message"] == "local activity failed with RuntimeError"
    new = run.state.wt
    assert new is not None and old is not None and new.task_id != old.task_id and receipt["created_task_ids"] == [new.task_id]
    assert new.available_at == T0 + 11
    with pytest.raises(ProtocolError):  # the released claim is gone
        pl.dwt.guard(run.state, old.task_id, old.owner, old.attempt, T0 + 5)
    run.claim(T0 + 11)
    second = prepare(run, now=T0 + 11, nonce="m" * 64, retry_policy={"max_attempts": 2, "backoff_seconds": [7]})
    assert second["attempt_number"] == 2 and run.state.step_seq == 1
    final = outcome(run, {"outcome": "failed", "message": "again", "exception_type": "RuntimeError", "non_retryable": False}, T0 + 12)
    assert final["event_type"] == "ActivityFailed" and final["claim_released"] is False


def test_recover_settles_a_callback_whose_claim_was_lost_as_a_failed_attempt() -> None:
    run = claimed()
    prepare(run)
    run.tick(T0 + 3 + LEASE)  # the worker vanished: its claim's lease ends
    run.claim(T0 + 100, owner="other")
    d = pl.descriptor(desc(), run.state)
    em, receipt = pl.recover(run.state, 1, d, T0 + 100, LEASE)
    run.commit(em)
    assert receipt["recovered"] is True and receipt["event_type"] == "ActivityFailed"
    assert receipt["callback_stop_state"] == "unknown" and receipt["claim_released"] is False
    event = run.state.events[-1]
    assert event["payload"]["local_recovery"]["lease_owner"] == "other"
    assert event["payload"]["activity_attempt_id"] == receipt["activity_attempt_id"]
    _, again = pl.recover(run.state, 1, d, T0 + 101, LEASE)
    assert again["duplicate"] is True and again["event_id"] == receipt["event_id"]


def test_the_sweeper_times_out_an_attempt_past_its_deadline_and_fences_its_claim() -> None:
    run = claimed()
    prepare(run, start_to_close_timeout=5)
    claim = run.state.wt
    assert claim is not None
    assert decide_time.next_deadline(run.state, T0 + 4) == T0 + 8
    run.tick(T0 + 9)
    assert run.state.events[-1]["event_type"] == "ActivityTimedOut"
    assert run.state.wt is not None and run.state.wt.task_id != claim.task_id and run.state.wt.status == "ready"


def test_a_checkpoint_applies_the_prefix_once_and_a_group_schedules_its_local_members() -> None:
    run = claimed()
    body = {"checkpoint_id": "c" * 64, "start_sequence": 1, "commands": [{"type": "record_side_effect", "result": "wwHioz3/VYAiNwQO"}]}
    em, receipt = pl.checkpoint(run.state, body, T0 + 3, LEASE, LIMITS, group=False)
    run.commit(em)
    assert receipt["next_sequence"] == 2 and receipt["task_id"] == run.state.wt.task_id  # type: ignore[union-attr]
    _, again = pl.checkpoint(run.state, body, T0 + 4, LEASE, LIMITS, group=False)
    assert again["duplicate"] is True
    with pytest.raises(ProtocolError) as info:
        pl.checkpoint(run.state, {**body, "checkpoint_id": "d" * 64}, T0 + 4, LEASE, LIMITS, group=False)
    assert info.value.reason == "checkpoint_sequence_mismatch"
    group = {"parallel_group_id": "g", "parallel_group_kind": "mixed", "parallel_group_base_sequence": 2, "parallel_group_size": 2}
    members = [{**desc(), "type": "prepare_local_activity", **group, "parallel_group_index": 0},
               {"type": "schedule_activity", "activity_type": "remote", "arguments": ARGS, **group, "parallel_group_index": 1}]
    em, receipt = pl.checkpoint(run.state, {"checkpoint_id": "e" * 64, "start_sequence": 2, "commands": members},
                                T0 + 5, LEASE, LIMITS, group=True)
    run.commit(em)
    assert receipt["local_activities"] == [{"sequence": 2, "activity_execution_id": run.state.locals[2].exec_id}]
    assert types(run.last.records) == ["ActivityScheduled", "ActivityScheduled"]  # type: ignore[union-attr]
    assert run.state.locals[2].status == "scheduled" and 3 in run.state.activities
    assert prepare(run, seq=2, now=T0 + 6, nonce="g" * 64)["attempt_number"] == 1
    with pytest.raises(ProtocolError):
        pl.checkpoint(run.state, {"checkpoint_id": "f" * 64, "start_sequence": 4,
                                  "commands": [{"type": "start_timer", "delay_seconds": 5}]}, T0 + 7, LEASE, LIMITS, group=False)


def test_a_cooperative_request_refuses_admission_stops_the_running_callback_and_is_acknowledged() -> None:
    run = claimed()
    prepare(run)
    step = run.state.locals[1]
    run.commit(dc.request(run.state, "req-1", "stop", 60, T0 + 4))
    receipt = pl.control_receipt(run.state, step, T0 + 5, pl.stop_reason(run.state, step, T0 + 5))
    assert receipt["stop_required"] is True and receipt["active"] is False and receipt["renewed"] is False
    assert receipt["reason"] == "cancellation_requested" and receipt["fenced"] is True
    assert receipt["cancellation_request"]["request_id"] == "req-1" and receipt["heartbeat_recorded"] is False
    em, ack = pl.acknowledge(run.state, step, "req-1", T0 + 6, LEASE)
    run.commit(em)
    assert ack["acknowledged"] is True and ack["duplicate"] is False
    assert run.state.events[-1]["payload"]["callback_state"] == "stopped"
    _, again = pl.acknowledge(run.state, step, "req-1", T0 + 7, LEASE)
    assert again["duplicate"] is True and again["history_event_id"] == ack["history_event_id"]
    with pytest.raises(ProtocolError) as info:
        prepare(run, seq=2, nonce="x" * 64)
    assert info.value.reason == "cancellation_requested"
    wt = run.state.wt
    assert wt is not None
    em, delivered = dc.deliver(run.state, wt.task_id, dc.parse_delivery(
        {"request_id": "req-1", "sequence": 1, "call_kind": "local_activity"}), T0 + 8)
    run.commit(em)
    assert delivered["delivered"] is True


@pytest.mark.parametrize(("raw", "field"), [
    ({**desc(), "execution_mode": "remote"}, "descriptor.execution_mode"),
    ({**desc(), "type": "schedule_activity"}, "descriptor.type"),
    ({**desc(), "arguments": "x"}, "descriptor.arguments"),
    ({**desc(), "cancellation_policy": "abandon"}, "descriptor.cancellation_policy"),
    ({**desc(), "retry_policy": {"max_attempts": 0}}, "descriptor.retry_policy.max_attempts"),
    ({**desc(), "heartbeat_timeout": 10, "start_to_close_timeout": 5}, "descriptor.heartbeat_timeout"),
    ({**desc(), "queue": "q"}, "descriptor.queue"),
])
def test_a_malformed_descriptor_is_refused_with_its_field_named(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(CommandError) as info:
        pl.descriptor(raw, claimed().state)
    assert info.value.status == 422 and field in info.value.errors, info.value.errors


def test_the_sweeper_keeps_a_task_that_is_already_waiting_for_a_worker() -> None:
    run = claimed()
    prepare(run, start_to_close_timeout=100)
    run.tick(T0 + 3 + LEASE)  # the worker vanished: its claim's task is offered again
    waiting = run.state.wt
    assert waiting is not None and waiting.status == "ready"
    run.tick(T0 + 104)  # then the attempt's deadline passes
    assert run.state.events[-1]["event_type"] == "ActivityTimedOut"
    assert run.state.wt is waiting, "the task already waiting replays the outcome; no second task"
