"""Operator decisions as plain functions (extended spec §8–§9): a standalone activity's host
run, repair's judgement of what a run lacks, archive, and the redrive copy."""

from __future__ import annotations

from typing import Any

import pytest

from actors import decide_operator, redrive, standalone
from actors.emit import new_run_meta, started_records
from actors.records import Record
from actors.run_state import RunState, fold
from tests.unit.test_fold_and_decide import T0, Run, activity, open_wait

POLICY = {"max_attempts": 2, "backoff_seconds": [1], "non_retryable_error_types": [], "start_to_close_timeout": 5,
          "schedule_to_start_timeout": None, "schedule_to_close_timeout": None, "heartbeat_timeout": None}


def _host() -> RunState:
    meta = new_run_meta(run_id="run-h", namespace="default", workflow_id="job-1", workflow_type=standalone.HOST_TYPE,
                        task_queue="q", run_number=1, arguments=None, now=T0, execution_timeout=None, run_timeout=None)
    meta["standalone"] = {"activity_type": "render", "activity_class": "Render", "queue": "q", "policy": POLICY, "arguments": None}
    state = RunState("run-h")
    records = started_records(meta, T0, accepted=True)
    for record in [*records, standalone.scheduled_record(meta, len(records) + 1, T0)]:
        fold(state, record)
    return state


def test_a_host_run_runs_its_activity_and_never_gets_a_workflow_task() -> None:
    state = _host()
    assert state.status == "running" and state.wt is None and state.wait_kind() == "activity"
    assert state.activities[1].queue == "q" and state.activities[1].policy["max_attempts"] == 2
    view = standalone.view(state)
    assert view["status"] == "running" and view["activity_status"] == "pending" and view["attempt_count"] == 0
    assert decide_operator.repair_need(state, T0 + 1) is None, "a job waiting for a worker lacks nothing yet"
    assert decide_operator.repair_need(state, T0 + 60) == ("activity_task_not_claimed", state.activities[1].task_id, "activity")


def _host_run_closes_with(state: RunState, records: list[Record]) -> list[str]:
    from actors.emit import Emitter

    em = Emitter(state, T0 + 2)
    em.records.extend(records)
    em.next_sequence += len([r for r in records if r.sequence is not None])
    standalone.close_with_activity(state, em)
    for record in em.records:
        fold(state, record)
    return [r.kind for r in em.records]


def test_a_host_run_closes_in_the_commit_of_its_activitys_final_outcome_not_a_retry() -> None:
    from actors import decide_activity

    state = _host()
    fold(state, decide_activity.claim(state, 1, "w", T0 + 1).records[0])
    retry = decide_activity.fail(state, state.activities[1], {"message": "flaky"}, T0 + 2).records
    assert _host_run_closes_with(state, retry) == ["ActivityRetryScheduled"] and state.is_open
    fold(state, decide_activity.claim(state, 1, "w", T0 + 3).records[0])
    final = decide_activity.fail(state, state.activities[1], {"message": "again", "type": "Boom"}, T0 + 4).records
    assert _host_run_closes_with(state, final) == ["ActivityFailed", "WorkflowFailed"]
    assert state.status == "failed" and state.events[-1]["payload"]["source_kind"] == "activity_execution"
    view = standalone.view(state)
    assert view["activity_status"] == "failed" and view["attempt_count"] == 2 and view["failure"]["message"] == "again"


def test_repair_names_what_an_open_run_lacks() -> None:
    run = Run()
    assert decide_operator.repair_need(run.state, T0) is None, "a fresh ready task was just offered"
    assert decide_operator.repair_need(run.state, T0 + 10)[0] == "workflow_task_not_claimed"
    lease = run.claim(T0 + 10).lease_expires_at
    assert decide_operator.repair_need(run.state, T0 + 11) is None
    em, outcome = decide_operator.repair(run.state, lease + 1, "cmd")
    assert outcome == "repair_dispatched" and [r.kind for r in em.records] == ["wt_release", "RepairRequested"]
    run.commit(em)
    assert run.state.wt.status == "ready"
    later = lease + 2
    run.claim(later)
    run.complete([open_wait(None)], later)
    assert decide_operator.repair_need(run.state, later + 1000) is None, "waiting on a condition is not stuck"
    run.state.status = "running"  # as if the task record had been lost
    assert decide_operator.repair_need(run.state, later + 1000)[0] == "workflow_task_missing"


def test_debug_reports_a_lease_that_ran_out_as_repair_needed() -> None:
    run = Run()
    wt = run.claim(T0)
    snapshot = decide_operator.debug(run.state, wt.lease_expires_at + 5)
    assert snapshot["diagnostic_status"] == "repair_needed"
    assert snapshot["pending_workflow_tasks"][0]["lease_expired"] is True
    assert snapshot["findings"][0]["code"] == "workflow_task_lease_expired"


def _failed_run(extra_commands: list[dict[str, Any]] | None = None) -> tuple[Run, list[Record]]:
    run = Run()
    seen = list(run.opening)
    seen += run.turn([activity(), activity("b"), *(extra_commands or [])], T0 + 1)
    seen += run.act_claim(1, T0 + 2)
    seen += run.act_complete(1, T0 + 3)
    seen += run.act_claim(2, T0 + 4)
    seen += run.act_fail(2, {"message": "final", "non_retryable": True}, T0 + 5)
    seen += run.turn([{"type": "fail_workflow", "message": "b failed", "failed_step_sequence": 2}], T0 + 6)
    return run, seen


def test_redrive_copies_up_to_the_failed_step_and_opens_it_afresh() -> None:
    run, records = _failed_run([{"type": "start_timer", "delay_seconds": 600}])
    before = redrive.cut(run.state)
    assert run.state.events[before - 1]["event_type"] == "ActivityFailed"
    meta = redrive.new_meta(run.state, "run-2", T0 + 10, before)
    redrive.check(meta, records)
    new = RunState("run-2")
    for record in redrive.opening(meta, records):
        fold(new, record)
    kinds = [e["event_type"] for e in new.events]
    assert kinds[0] == "WorkflowStarted" and new.events[0]["payload"]["redriven_from_run_id"] == run.state.run_id
    assert "ActivityFailed" not in kinds and "WorkflowFailed" not in kinds and kinds.count("ActivityCompleted") == 1
    assert [e["sequence"] for e in new.events] == list(range(1, len(kinds) + 1))
    step = new.activities[2]
    assert step.exec_id == "run-2-a2" and step.status == "pending" and step.attempt_number == 0 and step.available_at == T0 + 10
    assert 1 not in new.activities, "the completed step is history, not work"
    assert new.timers[3].fire_at == T0 + 1 + 600, "an open timer keeps its original fire_at"
    assert new.wt is not None and new.step_seq == 3 and new.meta["run_number"] == 2


def test_redrive_refuses_runs_it_cannot_resume_from_history() -> None:
    run, records = _failed_run([{"type": "start_child_workflow", "workflow_type": "kid", "parent_close_policy": "abandon"}])
    meta = redrive.new_meta(run.state, "run-2", T0 + 10, redrive.cut(run.state))
    with pytest.raises(redrive.NotRedrivable, match="child"):
        redrive.check(meta, records)
    completed = Run()
    completed.turn([{"type": "complete_workflow"}], T0 + 1)
    with pytest.raises(redrive.NotRedrivable, match="failed"):
        redrive.cut(completed.state)
    plain = Run()
    plain.turn([{"type": "fail_workflow", "message": "no step"}], T0 + 1)
    with pytest.raises(redrive.NotRedrivable, match="failed_step_sequence"):
        redrive.cut(plain.state)
