"""Runs built by hand: fold journal records and drive the decide functions with explicit clocks.

``Run`` emulates what the run actor does after a journal commit: every decision's
``Emitter.records`` are folded into the ``RunState``, and after each fold the history
must still be gap-free (event sequences 1..n). No I/O, no sleeping: time is a float.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors import decide_activity, decide_control, decide_time
from actors import decide_workflow_task as dwt
from actors.commands import CommandError
from actors.decide_workflow_task import GuardError
from actors.emit import AVRO_NULL_BLOB, Emitter, new_run_meta, started_records
from actors.records import Record
from actors.run_state import RunState, fold
from persistence.ids import iso

T0 = 1_800_000_000.0
RUN = "run-1"
ARGS = {"codec": "avro", "blob": "wwHioz3/VYAiNwwCCgZBZGEA"}
RESULT = {"codec": "avro", "blob": "wwHioz3/VYAiNwoWSGVsbG8sIEFkYSE="}
SIDE_EFFECT_BLOB = "wwHioz3/VYAiNwQO"
WF_OWNER = "wf-worker"
ACT_OWNER = "act-worker"


# --- helpers ---------------------------------------------------------------------------


def history(records: list[Record]) -> list[Record]:
    return [r for r in records if r.is_history]


def types(records: list[Record]) -> list[str]:
    return [r.kind for r in history(records)]


def only(records: list[Record], etype: str) -> Record:
    [rec] = [r for r in records if r.kind == etype]
    return rec


class Run:
    """One run under test: decide, then fold the records as the actor does after a commit."""

    def __init__(
        self,
        *,
        accepted: bool = True,
        run_timeout: int | None = None,
        execution_timeout: int | None = None,
        arguments: Any = ARGS,
    ) -> None:
        self.meta = new_run_meta(
            run_id=RUN,
            namespace="default",
            workflow_id="wf-1",
            workflow_type="greeter",
            task_queue="main",
            run_number=1,
            arguments=arguments,
            now=T0,
            execution_timeout=execution_timeout,
            run_timeout=run_timeout,
        )
        self.state = RunState(RUN)
        self.opening = self.apply(started_records(self.meta, T0, accepted=accepted))
        self.last: Emitter | None = None

    def apply(self, records: list[Record]) -> list[Record]:
        for rec in records:
            fold(self.state, rec)
        seqs = [e["sequence"] for e in self.state.events]
        assert seqs == list(range(1, len(seqs) + 1)), "history must stay gap-free"
        assert self.state.next_h == len(seqs) + 1
        return records

    def commit(self, em: Emitter | None) -> list[Record]:
        assert em is not None, "the decision produced nothing"
        self.last = em
        return self.apply(em.records)

    # workflow tasks
    def claim(self, now: float, owner: str = WF_OWNER) -> Any:
        self.commit(dwt.claim(self.state, owner, now))
        return self.state.wt

    def complete(self, commands: Any, now: float, owner: str = WF_OWNER) -> list[Record]:
        wt = self.state.wt
        assert wt is not None
        dwt.guard(self.state, wt.task_id, owner, wt.attempt, now)
        return self.commit(dwt.complete(self.state, wt.task_id, commands, now))

    def turn(self, commands: Any, now: float) -> list[Record]:
        """Claim the ready workflow task and complete it at the same instant."""
        self.claim(now)
        return self.complete(commands, now)

    def fail_task(self, failure: dict[str, Any], now: float, owner: str = WF_OWNER) -> tuple[str, list[Record]]:
        wt = self.state.wt
        assert wt is not None
        dwt.guard(self.state, wt.task_id, owner, wt.attempt, now)
        em, outcome = dwt.fail(self.state, wt.task_id, failure, now)
        return outcome, self.commit(em)

    # activities
    def act_claim(self, seq: int, now: float, owner: str = ACT_OWNER) -> list[Record]:
        return self.commit(decide_activity.claim(self.state, seq, owner, now))

    def _live(self, seq: int, owner: str, verb: str) -> Any:
        act = self.state.activities[seq]
        live = decide_activity.guard(self.state, act.task_id, act.attempt_id(), owner, verb)
        assert live is act
        return act

    def act_complete(self, seq: int, now: float, result: Any = RESULT, owner: str = ACT_OWNER) -> list[Record]:
        act = self._live(seq, owner, "completed")
        return self.commit(decide_activity.complete(self.state, act, result, now))

    def act_fail(self, seq: int, failure: dict[str, Any], now: float, owner: str = ACT_OWNER) -> list[Record]:
        act = self._live(seq, owner, "failed")
        return self.commit(decide_activity.fail(self.state, act, failure, now))

    # clock and control plane
    def tick(self, now: float) -> list[Record]:
        return self.commit(decide_time.tick(self.state, now))

    def signal(self, name: str, now: float, command_id: str = "sig-1") -> list[Record]:
        return self.commit(decide_control.signal(self.state, name, None, command_id, now))


def activity(name: str = "greet", **extra: Any) -> dict[str, Any]:
    return {"type": "schedule_activity", "activity_type": name, "queue": "acts", "arguments": ARGS, **extra}


def parallel(base: int, size: int, index: int, kind: str = "activity") -> dict[str, Any]:
    prefix = {"activity": "parallel-activities", "timer": "parallel-timers", "child": "parallel-children"}[kind]
    entry = {
        "parallel_group_id": f"{prefix}:{base}:{size}",
        "parallel_group_kind": kind,
        "parallel_group_base_sequence": base,
        "parallel_group_size": size,
        "parallel_group_index": index,
    }
    return {**entry, "parallel_group_path": [dict(entry)]}


def activity_group(base: int, names: list[str]) -> list[dict[str, Any]]:
    return [activity(name, **parallel(base, len(names), i)) for i, name in enumerate(names)]


def guard_error(fn: Any, *args: Any) -> GuardError:
    with pytest.raises(GuardError) as info:
        fn(*args)
    return info.value


def scheduled_run(now: float = T0 + 1, **act: Any) -> Run:
    """A run whose first task scheduled one activity (step 1)."""
    run = Run()
    run.turn([activity(**act)], now)
    return run


# --- start and the first workflow task -------------------------------------------------


def test_start_records_and_first_workflow_task() -> None:
    run = Run()
    assert types(run.opening) == ["StartAccepted", "WorkflowStarted"]
    assert [r.sequence for r in run.opening] == [1, 2]
    started = run.opening[1].payload
    assert started["workflow_instance_id"] == "wf-1"
    assert started["workflow_run_id"] == RUN
    assert started["input"] == ARGS
    assert run.state.status == "pending"
    assert run.state.meta["workflow_id"] == "wf-1"
    wt = run.state.wt
    assert wt is not None
    assert (wt.task_id, wt.status, wt.available_at, wt.attempt) == (f"{RUN}-wt1", "ready", T0, 0)
    assert run.state.events[1]["recorded_at"] == iso(T0)


def test_child_style_start_has_workflow_started_first() -> None:
    run = Run(accepted=False)
    assert types(run.opening) == ["WorkflowStarted"]
    assert run.opening[0].sequence == 1
    assert run.state.status == "pending"
    assert run.state.wt is not None and run.state.wt.status == "ready"


def test_claim_leases_with_attempt_one_and_snapshot() -> None:
    run = Run()
    assert dwt.claim(run.state, WF_OWNER, T0 - 1) is None  # not yet available
    wt = run.claim(T0 + 2)
    assert (wt.status, wt.attempt, wt.owner) == ("leased", 1, WF_OWNER)
    assert wt.lease_expires_at == T0 + 2 + dwt.WORKFLOW_TASK_LEASE
    assert wt.snapshot == 2
    assert run.state.wake is False
    assert dwt.claim(run.state, "other", T0 + 3) is None  # one task per run, already leased
    assert history(run.last.records) == []  # a claim writes no history


def test_complete_with_schedule_activity() -> None:
    run = Run()
    wt = run.claim(T0 + 1)
    records = run.complete([activity()], T0 + 1)
    assert types(records) == ["ActivityScheduled"]
    sched = only(records, "ActivityScheduled")
    assert sched.sequence == 3
    assert sched.workflow_task_id == wt.task_id
    assert sched.payload["sequence"] == 1
    assert sched.payload["activity_type"] == "greet"
    assert sched.payload["activity_execution_id"] == f"{RUN}-a1"
    assert sched.extra["queue"] == "acts"
    assert records[-1] == Record("wt_done", T0 + 1, data={"task": wt.task_id})
    act = run.state.activities[1]
    assert (act.status, act.attempt_number, act.available_at) == ("pending", 0, T0 + 1)
    assert run.state.wt is None
    assert run.state.status == "waiting"
    assert run.state.wait_kind() == "activity"
    assert run.state.events[2]["workflow_task_id"] == wt.task_id


def test_activity_without_queue_uses_run_queue() -> None:
    run = Run()
    run.turn([{"type": "schedule_activity", "activity_type": "greet"}], T0 + 1)
    assert run.state.activities[1].queue == "main"


def test_activity_claim_then_complete_wakes_workflow() -> None:
    run = scheduled_run()
    records = run.act_claim(1, T0 + 2)
    started = only(records, "ActivityStarted")
    assert started.payload["attempt_number"] == 1
    assert started.payload["activity_attempt_id"] == f"{RUN}-a1.1"
    assert started.extra == {"owner": ACT_OWNER, "lease": T0 + 2 + decide_activity.ACTIVITY_LEASE}
    act = run.state.activities[1]
    assert (act.status, act.owner, act.attempt_closed) == ("running", ACT_OWNER, False)
    assert run.state.wt is None  # ActivityStarted never wakes
    assert decide_activity.claim(run.state, 1, "other", T0 + 3) is None

    records = run.act_complete(1, T0 + 5)
    done = only(records, "ActivityCompleted")
    assert done.payload["result"] == RESULT["blob"]
    assert done.payload["payload_codec"] == "avro"
    assert done.payload["sequence"] == 1
    assert 1 not in run.state.activities
    wt = run.state.wt
    assert wt is not None
    assert (wt.task_id, wt.status, wt.available_at) == (f"{RUN}-wt2", "ready", T0 + 5)


def test_activity_task_payload_shape() -> None:
    run = scheduled_run(start_to_close_timeout=30, retry_policy={"max_attempts": 2})
    run.act_claim(1, T0 + 2)
    task = decide_activity.task_payload(run.state, run.state.activities[1])
    assert task["task_id"] == f"{RUN}-a1"
    assert task["activity_attempt_id"] == f"{RUN}-a1.1"
    assert task["payload_codec"] == "avro"
    assert task["arguments"] == ARGS
    assert task["retry_policy"]["snapshot_version"] == 1
    assert task["retry_policy"]["max_attempts"] == 2
    assert "heartbeat_timeout" not in task["retry_policy"]  # null-valued keys dropped
    assert task["deadlines"] == {"start_to_close": iso(T0 + 32)}


def test_complete_workflow_closes_run() -> None:
    run = scheduled_run()
    run.act_claim(1, T0 + 2)
    run.act_complete(1, T0 + 3)
    records = run.turn([{"type": "complete_workflow", "result": RESULT}], T0 + 4)
    done = only(records, "WorkflowCompleted")
    assert done.payload == {"output": RESULT["blob"], "payload_codec": "avro"}
    assert (run.state.status, run.state.closed_reason, run.state.closed_at) == ("completed", "completed", T0 + 4)
    assert run.state.output == RESULT
    assert run.state.wt is None
    assert decide_time.next_deadline(run.state, T0 + 1000) is None


def test_complete_workflow_without_result_writes_avro_null() -> None:
    run = Run()
    records = run.turn([{"type": "complete_workflow"}], T0 + 1)
    assert only(records, "WorkflowCompleted").payload["output"] == AVRO_NULL_BLOB


def test_fail_workflow_records_failure() -> None:
    run = Run()
    records = run.turn(
        [{"type": "fail_workflow", "message": "declined", "exception_type": "CardDeclined", "failed_step_sequence": 2}],
        T0 + 1,
    )
    p = only(records, "WorkflowFailed").payload
    assert p["message"] == "declined"
    assert p["source_kind"] == "workflow_run"
    assert p["exception"] == {"class": "Exception", "type": "CardDeclined", "message": "declined", "code": 0}
    assert p["failed_step_sequence"] == 2
    assert (run.state.status, run.state.closed_reason) == ("failed", "failed")


# --- parallel groups and step numbering ------------------------------------------------


def test_parallel_group_wakes_only_when_all_members_resolved() -> None:
    run = Run()
    records = run.turn(activity_group(1, ["a", "b", "c"]), T0 + 1)
    assert [r.payload["sequence"] for r in history(records)] == [1, 2, 3]
    assert all(r.payload["parallel_group_id"] == "parallel-activities:1:3" for r in history(records))
    for seq in (1, 2, 3):
        run.act_claim(seq, T0 + 2)
    run.act_complete(3, T0 + 3)
    assert run.state.wt is None
    failed = run.act_fail(1, {"message": "no", "type": "Boom"}, T0 + 4)
    assert types(failed) == ["ActivityFailed"]
    assert only(failed, "ActivityFailed").payload["parallel_group_index"] == 0  # metadata on resolutions
    assert run.state.wt is None  # a failed member does not wake early
    run.act_complete(2, T0 + 5)
    assert run.state.wt is not None and run.state.wt.available_at == T0 + 5


def test_duplicate_group_is_ignored_and_consumes_no_steps() -> None:
    run = Run()
    # a user timer outside the group gives the workflow a reason to wake before the group finished
    run.turn([{"type": "start_timer", "delay_seconds": 1}, *activity_group(2, ["a", "b", "c"])], T0 + 1)
    assert run.state.step_seq == 4
    fired = run.tick(T0 + 2)
    assert types(fired) == ["TimerFired"]
    wt = run.claim(T0 + 3)
    records = run.complete(activity_group(2, ["a", "b", "c"]), T0 + 3)
    assert records == [Record("wt_done", T0 + 3, data={"task": wt.task_id})]
    assert run.state.step_seq == 4
    assert sorted(run.state.activities) == [2, 3, 4]
    run.act_claim(2, T0 + 4)
    run.act_complete(2, T0 + 5)
    assert run.state.wt is None
    run.act_claim(3, T0 + 6)
    run.act_claim(4, T0 + 6)
    run.act_complete(3, T0 + 7)
    run.act_complete(4, T0 + 8)
    # a re-emitted group followed by a new step: the new step gets the next number
    records = run.turn([*activity_group(2, ["a", "b", "c"]), {"type": "record_side_effect", "result": SIDE_EFFECT_BLOB}], T0 + 9)
    assert types(records) == ["SideEffectRecorded"]
    assert only(records, "SideEffectRecorded").payload["sequence"] == 5


def test_parallel_metadata_disagreeing_with_assigned_step_is_rejected_without_effect() -> None:
    run = Run()
    run.claim(T0 + 1)
    before = (list(run.state.events), run.state.step_seq, run.state.next_h)
    with pytest.raises(CommandError) as info:
        dwt.complete(
            run.state,
            run.state.wt.task_id,
            [{"type": "record_side_effect", "result": SIDE_EFFECT_BLOB}, *activity_group(1, ["a", "b"])],
            T0 + 1,
        )
    assert (info.value.status, info.value.reason) == (409, "invalid_commands")
    assert (list(run.state.events), run.state.step_seq, run.state.next_h) == before
    assert run.state.wt.status == "leased"


def test_incomplete_parallel_group_is_rejected() -> None:
    run = Run()
    run.claim(T0 + 1)
    incomplete = activity_group(1, ["a", "b", "c"])[:2]  # size 3, only indexes 0 and 1 sent
    with pytest.raises(CommandError) as info:
        dwt.complete(run.state, run.state.wt.task_id, incomplete, T0 + 1)
    assert (info.value.status, info.value.reason) == (409, "invalid_commands")


def test_step_sequence_is_dense_across_kinds() -> None:
    run = Run()
    records = run.turn(
        [
            {"type": "record_side_effect", "result": SIDE_EFFECT_BLOB},
            {"type": "record_version_marker", "change_id": "fraud", "version": 1, "min_supported": -1, "max_supported": 1},
            *activity_group(3, ["a", "b"]),
        ],
        T0 + 1,
    )
    assert [(r.kind, r.payload["sequence"]) for r in history(records)] == [
        ("SideEffectRecorded", 1),
        ("VersionMarkerRecorded", 2),
        ("ActivityScheduled", 3),
        ("ActivityScheduled", 4),
    ]
    assert only(records, "SideEffectRecorded").payload["result"] == SIDE_EFFECT_BLOB
    for seq in (3, 4):
        run.act_claim(seq, T0 + 2)
        run.act_complete(seq, T0 + 3)
    records = run.turn(
        [{"type": "upsert_search_attributes", "attributes": {"Region": "eu"}}, activity("c"), {"type": "start_timer", "delay_seconds": 9}],
        T0 + 4,
    )
    assert [r.payload["sequence"] for r in history(records)] == [5, 6, 7]
    assert run.state.step_seq == 7
    assert run.state.search_attributes == {"Region": "eu"}
    assert sorted(run.state.steps) == [1, 2, 3, 4, 5, 6, 7]


# --- condition waits and signals --------------------------------------------------------


def open_wait(timeout: int | None = 60, key: str = "approval") -> dict[str, Any]:
    cmd: dict[str, Any] = {"type": "open_condition_wait", "condition_key": key, "condition_definition_fingerprint": "sha256:7d91"}
    if timeout is not None:
        cmd["timeout_seconds"] = timeout
    return cmd


def test_open_condition_wait_with_timeout_schedules_condition_timer() -> None:
    run = Run()
    records = run.turn([open_wait(60)], T0 + 1)
    assert types(records) == ["ConditionWaitOpened", "TimerScheduled"]
    opened, timer = history(records)
    assert opened.payload == {
        "sequence": 1,
        "condition_wait_id": f"{RUN}-w1",
        "condition_key": "approval",
        "condition_definition_fingerprint": "sha256:7d91",
        "timeout_seconds": 60,
    }
    assert timer.payload["sequence"] == 1
    assert timer.payload["timer_kind"] == "condition_timeout"
    assert timer.payload["condition_wait_id"] == f"{RUN}-w1"
    assert timer.payload["delay_seconds"] == 60
    assert timer.payload["fire_at"] == iso(T0 + 61)
    assert run.state.cond is not None and run.state.cond["seq"] == 1
    assert run.state.timers[1].kind == "condition"
    assert run.state.wait_kind() == "condition"
    assert run.state.wt is None


def test_condition_wait_without_timeout_has_no_timer() -> None:
    run = Run()
    records = run.turn([open_wait(None)], T0 + 1)
    assert types(records) == ["ConditionWaitOpened"]
    assert run.state.timers == {}


def test_signal_without_open_wait_does_not_wake() -> None:
    run = scheduled_run()
    records = run.signal("approve", T0 + 2)
    assert types(records) == ["SignalReceived"]
    assert "workflow_sequence" not in records[0].payload
    assert run.state.wt is None


def test_signal_wakes_open_wait_and_completion_satisfies_it_first() -> None:
    run = Run()
    run.turn([open_wait(60)], T0 + 1)
    sig = run.signal("approve", T0 + 5, command_id="cmd-sig")
    assert sig[0].payload["workflow_sequence"] == 1
    assert sig[0].command_id == "cmd-sig"
    assert run.state.wt is not None and run.state.wt.available_at == T0 + 5
    records = run.turn([activity("orders.charge")], T0 + 6)
    assert types(records) == ["ConditionWaitSatisfied", "TimerCancelled", "ActivityScheduled"]
    satisfied, cancelled, scheduled = history(records)
    assert satisfied.payload["sequence"] == 1
    assert satisfied.payload["condition_wait_id"] == f"{RUN}-w1"
    assert satisfied.payload["signal_name"] == "approve"
    assert satisfied.payload["workflow_signal_id"] == "cmd-sig"
    assert satisfied.payload["timer_id"] == f"{RUN}-t1"
    assert cancelled.payload["timer_kind"] == "condition_timeout"
    assert cancelled.payload["sequence"] == 1
    assert scheduled.payload["sequence"] == 2
    assert run.state.cond is None
    assert run.state.timers == {}


def test_signal_during_lease_is_replayed_against_a_wait_the_completion_opens() -> None:
    run = scheduled_run()
    run.act_claim(1, T0 + 2)
    run.act_complete(1, T0 + 3)
    run.claim(T0 + 4)  # snapshot taken before the signal
    run.signal("approve", T0 + 5)  # no wait open yet: no wake by itself
    run.complete([open_wait(None)], T0 + 6)
    # the worker never saw the signal; the next task must replay it against the new wait
    assert run.state.wt is not None and run.state.wt.available_at == T0 + 6


def test_signal_seen_in_snapshot_does_not_wake_the_reopened_wait() -> None:
    run = Run()
    run.turn([open_wait(None)], T0 + 1)
    run.signal("nope", T0 + 2)
    run.claim(T0 + 3)  # the snapshot includes the signal
    run.complete([open_wait(None)], T0 + 4)  # predicate still false: wait reopened
    assert run.state.wt is None


def test_completion_that_missed_a_signal_to_its_open_wait_is_superseded() -> None:
    """Two signals arrive before a wait opens and a third reaches the wait while the catch-up
    task is leased. Replay binds the third to the open wait, so that task's commands (decided
    without it) are dropped and a fresh task replays with it (found with three fast signals)."""
    run = Run()
    run.signal("add", T0 + 1, command_id="s1")
    run.claim(T0 + 2)
    run.signal("add", T0 + 3, command_id="s2")  # after the snapshot, no wait open yet
    run.complete([open_wait(None)], T0 + 4)
    assert run.state.wt is not None  # catch-up task for s2
    run.claim(T0 + 5)
    late = run.signal("add", T0 + 6, command_id="s3")  # reaches the open wait during the lease
    assert late[0].payload["workflow_sequence"] == 1
    records = run.complete([open_wait(None)], T0 + 7)
    assert types(records) == []  # nothing written: no ConditionWaitSatisfied, no second wait
    assert run.state.cond is not None and run.state.cond["seq"] == 1
    assert run.state.wt is not None and run.state.wt.status == "ready"
    run.claim(T0 + 8)
    assert types(run.complete([{"type": "complete_workflow"}], T0 + 9)) == ["ConditionWaitSatisfied", "WorkflowCompleted"]


def test_condition_timeout_fires_when_no_task_is_leased() -> None:
    run = Run()
    run.turn([open_wait(10)], T0 + 1)
    assert run.tick(T0 + 10) == []
    fired = run.tick(T0 + 11)
    assert types(fired) == ["TimerFired"]
    assert fired[0].payload["timer_kind"] == "condition_timeout"
    assert fired[0].payload["fired_at"] == iso(T0 + 11)
    assert run.state.cond is None
    assert run.state.wt is not None


def test_condition_timeout_is_deferred_while_ordinary_task_is_leased() -> None:
    run = Run()
    run.turn([open_wait(10)], T0 + 1)
    run.signal("approve", T0 + 5)
    run.claim(T0 + 6)
    assert run.tick(T0 + 12) == []  # due at T0+11, but the leased task may satisfy the wait
    assert run.state.cond is not None
    outcome, records = run.fail_task({"type": "WorkflowTaskWaitingForHistory", "message": "nothing new"}, T0 + 13)
    assert outcome == "completed"
    assert history(records) == []
    fired = run.tick(T0 + 13)
    assert types(fired) == ["TimerFired"]
    assert fired[0].payload["condition_wait_id"] == f"{RUN}-w1"
    assert run.state.cond is None
    assert run.state.wt is not None  # the timeout wakes the workflow


def test_deferred_condition_timeout_is_cancelled_by_the_completion() -> None:
    run = Run()
    run.turn([open_wait(10)], T0 + 1)
    run.signal("approve", T0 + 5)
    run.claim(T0 + 6)
    assert run.tick(T0 + 12) == []
    records = run.complete([{"type": "complete_workflow"}], T0 + 13)
    assert types(records) == ["ConditionWaitSatisfied", "TimerCancelled", "WorkflowCompleted"]
    assert run.tick(T0 + 14) == []


def test_reopened_wait_keeps_remaining_deadline() -> None:
    run = Run()
    run.turn([open_wait(60)], T0 + 1)  # deadline T0+61
    run.signal("approve", T0 + 20)
    records = run.turn([open_wait(60)], T0 + 25)
    assert types(records) == ["ConditionWaitSatisfied", "TimerCancelled", "ConditionWaitOpened", "TimerScheduled"]
    timer = history(records)[-1]
    assert timer.payload["sequence"] == 2
    assert timer.payload["delay_seconds"] == 36
    assert timer.payload["fire_at"] == iso(T0 + 61)
    assert run.state.timers[2].fire_at == T0 + 61


def test_reopened_wait_with_other_key_gets_full_timeout() -> None:
    run = Run()
    run.turn([open_wait(60)], T0 + 1)
    run.signal("approve", T0 + 20)
    records = run.turn([open_wait(60, key="other")], T0 + 25)
    assert history(records)[-1].payload["delay_seconds"] == 60
    assert run.state.timers[2].fire_at == T0 + 85


# --- activity retries and timeouts -----------------------------------------------------


def test_activity_retry_with_backoff_then_final_failure() -> None:
    run = scheduled_run(retry_policy={"max_attempts": 3, "backoff_seconds": [2, 5]})
    failure = {"message": "flaky", "type": "Flaky", "class": "app.Flaky"}

    run.act_claim(1, T0 + 2)
    records = run.act_fail(1, failure, T0 + 3)
    retry = only(records, "ActivityRetryScheduled").payload
    assert (retry["retry_backoff_seconds"], retry["retry_after_attempt"], retry["max_attempts"]) == (2, 1, 3)
    assert retry["retry_available_at"] == iso(T0 + 5)
    assert run.state.wt is None  # retries never wake the workflow
    act = run.state.activities[1]
    assert (act.status, act.available_at, act.attempt_closed) == ("pending", T0 + 5, True)
    assert decide_activity.claim(run.state, 1, ACT_OWNER, T0 + 4) is None  # backoff not elapsed

    assert only(run.act_claim(1, T0 + 5), "ActivityStarted").payload["attempt_number"] == 2
    retry = only(run.act_fail(1, failure, T0 + 6), "ActivityRetryScheduled").payload
    assert (retry["retry_backoff_seconds"], retry["retry_after_attempt"]) == (5, 2)

    run.act_claim(1, T0 + 11)
    records = run.act_fail(1, failure, T0 + 12)
    final = only(records, "ActivityFailed").payload
    assert final["attempt_number"] == 3
    assert final["non_retryable"] is False
    assert final["exception_type"] == "Flaky"
    assert final["exception_class"] == "app.Flaky"
    assert final["failure_category"] == "activity"
    assert final["activity_attempt_id"] == f"{RUN}-a1.3"
    assert 1 not in run.state.activities
    assert run.state.wt is not None


def test_backoff_reuses_last_entry_beyond_list() -> None:
    run = scheduled_run(retry_policy={"max_attempts": 4, "backoff_seconds": [3]})
    run.act_claim(1, T0 + 2)
    run.act_fail(1, {"message": "x"}, T0 + 2)
    run.act_claim(1, T0 + 5)
    retry = only(run.act_fail(1, {"message": "x"}, T0 + 5), "ActivityRetryScheduled").payload
    assert retry["retry_backoff_seconds"] == 3


def test_default_policy_fails_on_first_attempt() -> None:
    run = scheduled_run()
    run.act_claim(1, T0 + 2)
    records = run.act_fail(1, {"message": "x"}, T0 + 3)
    assert types(records) == ["ActivityFailed"]
    assert only(records, "ActivityFailed").payload["exception_class"] == "RuntimeError"


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        ({"message": "no", "type": "CardDeclined"}, True),
        ({"message": "no", "type": "Other", "class": "CardDeclined"}, True),
        ({"message": "no", "type": "Other", "non_retryable": True}, True),
        ({"message": "no", "type": "Other", "class": "app.Other"}, False),
    ],
    ids=["type-listed", "class-listed", "flagged", "retryable"],
)
def test_non_retryable_error_types(failure: dict[str, Any], expected: bool) -> None:
    run = scheduled_run(retry_policy={"max_attempts": 5, "non_retryable_error_types": ["CardDeclined"]})
    run.act_claim(1, T0 + 2)
    records = run.act_fail(1, failure, T0 + 3)
    if expected:
        assert types(records) == ["ActivityFailed"]
        p = only(records, "ActivityFailed").payload
        assert p["non_retryable"] is True
        assert p["exception"]["non_retryable"] is True
        assert run.state.wt is not None
    else:
        assert types(records) == ["ActivityRetryScheduled"]
        assert run.state.wt is None


def test_start_to_close_timeout_final() -> None:
    run = scheduled_run(start_to_close_timeout=10)
    run.act_claim(1, T0 + 2)
    assert run.tick(T0 + 11) == []
    records = run.tick(T0 + 12)
    p = only(records, "ActivityTimedOut").payload
    assert p["timeout_kind"] == "start_to_close"
    assert p["failure_category"] == "timeout"
    assert p["message"] == f"Activity greet start_to_close deadline expired at {iso(T0 + 12)}."
    assert run.state.wt is not None


def test_start_to_close_timeout_retries_within_budget() -> None:
    run = scheduled_run(start_to_close_timeout=10, retry_policy={"max_attempts": 2})
    run.act_claim(1, T0 + 2)
    retry = only(run.tick(T0 + 12), "ActivityRetryScheduled").payload
    assert (retry["retry_reason"], retry["timeout_kind"]) == ("timeout", "start_to_close")
    assert run.state.wt is None
    # the superseded attempt is stale
    err = guard_error(decide_activity.guard, run.state, f"{RUN}-a1", f"{RUN}-a1.1", ACT_OWNER, "completed")
    assert (err.status, err.reason) == (409, "stale_attempt")


def test_heartbeat_timeout() -> None:
    run = scheduled_run(heartbeat_timeout=5, start_to_close_timeout=30)
    run.act_claim(1, T0 + 2)
    records = run.tick(T0 + 7)
    assert only(records, "ActivityTimedOut").payload["timeout_kind"] == "heartbeat"


def test_schedule_to_close_is_final_even_with_attempts_left() -> None:
    run = scheduled_run(start_to_close_timeout=10, schedule_to_close_timeout=20, retry_policy={"max_attempts": 5})
    run.act_claim(1, T0 + 1)
    assert types(run.tick(T0 + 11)) == ["ActivityRetryScheduled"]
    run.act_claim(1, T0 + 12)
    records = run.tick(T0 + 21)  # schedule-to-close deadline T0+21, attempt 2's start-to-close T0+22
    p = only(records, "ActivityTimedOut").payload
    assert p["timeout_kind"] == "schedule_to_close"
    assert p["attempt_number"] == 2
    assert 1 not in run.state.activities


@pytest.mark.parametrize(
    ("timeouts", "expected_kind"),
    [
        ({"heartbeat_timeout": 5, "start_to_close_timeout": 10}, "heartbeat"),
        ({"start_to_close_timeout": 10, "schedule_to_close_timeout": 10}, "schedule_to_close"),
        ({"heartbeat_timeout": 5, "start_to_close_timeout": 10, "schedule_to_close_timeout": 12}, "schedule_to_close"),
    ],
)
def test_timeout_precedence_when_several_deadlines_passed(timeouts: dict[str, int], expected_kind: str) -> None:
    run = scheduled_run(retry_policy={"max_attempts": 5}, **timeouts)
    run.act_claim(1, T0 + 1)
    records = run.tick(T0 + 30)  # every deadline has passed
    assert len(history(records)) == 1
    kind = history(records)[0].payload["timeout_kind"]
    assert kind == expected_kind
    if expected_kind == "schedule_to_close":
        assert types(records) == ["ActivityTimedOut"]


def test_lease_expiry_releases_activity_without_history() -> None:
    run = scheduled_run()
    run.act_claim(1, T0 + 2)
    lease = run.state.activities[1].lease_expires_at
    records = run.tick(lease)
    assert records == [Record("act_release", lease, data={"seq": 1})]
    assert run.state.activities[1].status == "pending"
    again = run.act_claim(1, lease + 1)
    assert only(again, "ActivityStarted").payload["attempt_number"] == 2


def test_schedule_to_start_timeouts_exhaust_the_attempt_budget() -> None:
    run = scheduled_run(schedule_to_start_timeout=5, retry_policy={"max_attempts": 2})
    run.act_claim(1, T0 + 2)
    run.act_fail(1, {"message": "flaky"}, T0 + 3)  # attempt 1 failed -> retry, ready at T0+3
    now = T0 + 3
    for _ in range(5):  # nobody ever claims the retry
        now += 6
        run.tick(now)
        if 1 not in run.state.activities:
            break
    retries = [e for e in run.state.events if e["event_type"] == "ActivityRetryScheduled"]
    assert len(retries) <= 1  # max_attempts 2 allows one retry
    assert run.state.events[-1]["event_type"] == "ActivityTimedOut"


# --- run timeout, cancel, terminate ----------------------------------------------------


def busy_run(**timeouts: Any) -> Run:
    """A run with a running activity (step 1) and a pending user timer (step 2)."""
    run = Run(**timeouts)
    run.turn([activity(), {"type": "start_timer", "delay_seconds": 500}], T0 + 1)
    run.act_claim(1, T0 + 2)
    return run


def test_run_timeout_closes_run_and_cancels_open_steps() -> None:
    run = busy_run(run_timeout=100)
    assert run.opening[1].payload["run_timeout_seconds"] == 100
    assert run.opening[1].payload["run_deadline_at"] == iso(T0 + 100)
    assert run.tick(T0 + 99) == []
    records = run.tick(T0 + 100)
    assert types(records) == ["ActivityCancelled", "TimerCancelled", "WorkflowTimedOut"]
    p = only(records, "WorkflowTimedOut").payload
    assert p["timeout_kind"] == "run_timeout"
    assert p["run_deadline_at"] == iso(T0 + 100)
    assert p["message"] == f"Workflow run deadline expired at {iso(T0 + 100)}."
    assert (run.state.status, run.state.closed_reason) == ("failed", "timed_out")
    assert run.state.activities == {} and run.state.timers == {} and run.state.wt is None
    assert run.tick(T0 + 600) == []  # closed runs never fire timers


def test_execution_timeout_wins_when_both_deadlines_passed() -> None:
    run = busy_run(run_timeout=100, execution_timeout=50)
    records = run.tick(T0 + 200)
    assert only(records, "WorkflowTimedOut").payload["timeout_kind"] == "execution_timeout"


@pytest.mark.parametrize(
    ("kind", "requested", "terminal", "status"),
    [
        ("cancel", "CancelRequested", "WorkflowCancelled", "cancelled"),
        ("terminate", "TerminateRequested", "WorkflowTerminated", "terminated"),
    ],
)
def test_cancel_and_terminate_close_at_once(kind: str, requested: str, terminal: str, status: str) -> None:
    run = busy_run()
    run.signal("approve", T0 + 3)
    records = run.commit(decide_control.cancel_or_terminate(run.state, kind, "user asked", "cmd-9", T0 + 4))
    assert types(records) == [requested, "ActivityCancelled", "TimerCancelled", terminal]
    assert records[0].payload["command_type"] == kind
    assert records[0].command_id == "cmd-9"
    assert only(records, "ActivityCancelled").payload["activity_attempt_id"] == f"{RUN}-a1.1"
    p = only(records, terminal).payload
    assert p["reason"] == "user asked"
    assert p["message"] == f"Workflow {status}: user asked"
    assert p["closed_reason"] == status
    assert (run.state.status, run.state.closed_reason) == (status, status)
    assert run.state.activities == {} and run.state.timers == {}
    assert decide_time.next_deadline(run.state, T0 + 1000) is None


def test_cancel_while_task_leased_fences_the_task() -> None:
    run = Run()
    wt = run.claim(T0 + 1)
    run.commit(decide_control.cancel_or_terminate(run.state, "cancel", None, "cmd-1", T0 + 2))
    err = guard_error(dwt.guard, run.state, wt.task_id, WF_OWNER, 1, T0 + 3)
    assert (err.status, err.reason) == (409, "run_closed")
    assert err.extra["run_status"] == "cancelled"
    assert err.extra["stop_reason"] == "run_cancelled"
    assert err.extra["cancel_requested"] is True
    assert err.extra["can_continue"] is False
    assert err.extra["run_closed_at"] == iso(T0 + 2)


# --- guards ----------------------------------------------------------------------------


def test_workflow_task_guard_errors() -> None:
    run = Run()
    wt_id = run.state.wt.task_id

    err = guard_error(dwt.guard, run.state, "nope", WF_OWNER, 1, T0)
    assert (err.status, err.reason) == (404, "task_not_found")
    err = guard_error(dwt.guard, run.state, f"{RUN}-wt9", WF_OWNER, 1, T0)
    assert (err.status, err.reason) == (404, "task_not_found")

    err = guard_error(dwt.guard, run.state, wt_id, WF_OWNER, 1, T0)  # ready, not leased
    assert (err.status, err.reason, err.extra["task_status"]) == (409, "task_not_leased", "ready")

    run.claim(T0 + 1)
    lease = run.state.wt.lease_expires_at
    err = guard_error(dwt.guard, run.state, wt_id, "intruder", 1, T0 + 2)
    assert (err.status, err.reason, err.extra["lease_owner"]) == (409, "lease_owner_mismatch", WF_OWNER)
    err = guard_error(dwt.guard, run.state, wt_id, WF_OWNER, 0, T0 + 2)
    assert (err.status, err.reason, err.extra["current_attempt"]) == (409, "workflow_task_attempt_mismatch", 1)
    err = guard_error(dwt.guard, run.state, wt_id, "intruder", 0, lease)  # expiry is checked first
    assert (err.status, err.reason, err.release) == (409, "lease_expired", True)
    assert err.extra["lease_expires_at"] == iso(lease)
    dwt.guard(run.state, wt_id, WF_OWNER, 1, lease - 0.001)  # still valid just before expiry

    run.complete([activity()], T0 + 3)
    err = guard_error(dwt.guard, run.state, wt_id, WF_OWNER, 1, T0 + 4)  # duplicate completion
    assert (err.status, err.reason) == (409, "task_not_leased")


def test_released_task_is_reclaimed_with_next_attempt() -> None:
    run = Run()
    wt = run.claim(T0 + 1)
    lease = wt.lease_expires_at
    records = run.tick(lease)
    assert records == [Record("wt_release", lease, data={"task": wt.task_id, "reason": "lease_expired"})]
    assert run.state.wt.status == "ready"
    wt = run.claim(lease + 1, owner="second")
    assert (wt.attempt, wt.owner) == (2, "second")
    err = guard_error(dwt.guard, run.state, wt.task_id, WF_OWNER, 1, lease + 2)
    assert err.reason == "lease_owner_mismatch"


def test_workflow_task_guard_after_run_completed() -> None:
    run = Run()
    wt = run.claim(T0 + 1)
    run.complete([{"type": "complete_workflow"}], T0 + 2)
    err = guard_error(dwt.guard, run.state, wt.task_id, WF_OWNER, 1, T0 + 3)
    assert (err.status, err.reason) == (409, "run_closed")
    assert (err.extra["stop_reason"], err.extra["cancel_requested"]) == ("run_completed", False)


def test_activity_guard_errors() -> None:
    run = scheduled_run(retry_policy={"max_attempts": 3})
    task = f"{RUN}-a1"
    run.act_claim(1, T0 + 2)

    cases = [
        ((f"{RUN}-a9", f"{RUN}-a9.1", ACT_OWNER), (404, "task_not_found")),
        (("bogus", "bogus.1", ACT_OWNER), (404, "task_not_found")),
        ((task, "garbage", ACT_OWNER), (404, "attempt_not_found")),
        ((task, f"{task}.0", ACT_OWNER), (404, "attempt_not_found")),
        ((task, f"{task}.5", ACT_OWNER), (404, "attempt_not_found")),
        ((task, f"{RUN}-a2.1", ACT_OWNER), (409, "task_mismatch")),
        ((task, f"{task}.1", "intruder"), (409, "lease_owner_mismatch")),
    ]
    for (task_id, attempt_id, owner), expected in cases:
        err = guard_error(decide_activity.guard, run.state, task_id, attempt_id, owner, "completed")
        assert (err.status, err.reason) == expected, (task_id, attempt_id, owner)


def test_activity_stale_attempt_after_retry() -> None:
    run = scheduled_run(retry_policy={"max_attempts": 3})
    task = f"{RUN}-a1"
    run.act_claim(1, T0 + 2)
    run.act_fail(1, {"message": "x"}, T0 + 3)
    err = guard_error(decide_activity.guard, run.state, task, f"{task}.1", ACT_OWNER, "completed")
    assert (err.status, err.reason) == (409, "stale_attempt")
    assert (err.extra["outcome"], err.extra["recorded"], err.extra["next_task_id"]) == ("completed", False, None)
    run.act_claim(1, T0 + 4, owner="second")
    err = guard_error(decide_activity.guard, run.state, task, f"{task}.1", ACT_OWNER, "failed")
    assert (err.reason, err.extra["outcome"]) == ("stale_attempt", "failed")
    assert decide_activity.guard(run.state, task, f"{task}.2", "second", "completed") is run.state.activities[1]


def test_activity_duplicate_outcome_while_run_open_is_stale() -> None:
    run = scheduled_run()
    run.act_claim(1, T0 + 2)
    run.act_complete(1, T0 + 3)
    err = guard_error(decide_activity.guard, run.state, f"{RUN}-a1", f"{RUN}-a1.1", ACT_OWNER, "completed")
    assert (err.status, err.reason) == (409, "stale_attempt")


@pytest.mark.parametrize(("kind", "reason"), [("cancel", "run_cancelled"), ("terminate", "run_terminated")])
def test_activity_outcome_after_cancel_is_ignored(kind: str, reason: str) -> None:
    run = scheduled_run()
    run.act_claim(1, T0 + 2)
    run.commit(decide_control.cancel_or_terminate(run.state, kind, None, "cmd-1", T0 + 3))
    err = guard_error(decide_activity.guard, run.state, f"{RUN}-a1", f"{RUN}-a1.1", ACT_OWNER, "completed")
    assert (err.status, err.reason) == (409, reason)
    assert err.extra["outcome"] == "ignored"
    assert err.extra["cancel_requested"] is True
    assert err.extra["can_continue"] is False
    assert err.extra["activity_status"] == "cancelled"


def test_repeated_activity_outcome_after_run_completed_is_stale() -> None:
    run = scheduled_run()
    run.act_claim(1, T0 + 2)
    run.act_complete(1, T0 + 3)
    run.turn([{"type": "complete_workflow"}], T0 + 4)
    # the activity worker retries its completion after a lost 200
    err = guard_error(decide_activity.guard, run.state, f"{RUN}-a1", f"{RUN}-a1.1", ACT_OWNER, "completed")
    assert (err.status, err.reason) == (409, "stale_attempt")


# --- workflow task failures ------------------------------------------------------------


def test_waiting_for_history_failure_closes_task_without_history() -> None:
    run = scheduled_run()
    run.act_claim(1, T0 + 2)
    run.act_complete(1, T0 + 3)
    wt = run.claim(T0 + 4)
    before = len(run.state.events)
    outcome, records = run.fail_task({"type": "WorkflowTaskWaitingForHistory", "message": "waiting"}, T0 + 5)
    assert outcome == "completed"
    assert records == [Record("wt_done", T0 + 5, data={"task": wt.task_id})]
    assert len(run.state.events) == before
    assert run.state.wt is None  # no new wake arrived meanwhile
    assert run.state.wt_failures == 0
    assert run.state.status == "waiting"


def test_waiting_for_history_with_new_wake_creates_next_task() -> None:
    run = Run()
    run.turn([activity("a"), activity("b")], T0 + 1)
    run.act_claim(1, T0 + 2)
    run.act_complete(1, T0 + 3)
    run.claim(T0 + 4)
    run.act_claim(2, T0 + 5)
    run.act_complete(2, T0 + 6)  # wakes while the task is leased
    outcome, _ = run.fail_task({"type": "WorkflowTaskWaitingForHistory", "message": "waiting"}, T0 + 7)
    assert outcome == "completed"
    assert run.state.wt is not None and run.state.wt.task_id == f"{RUN}-wt3"


def test_other_failures_retry_with_capped_exponential_backoff() -> None:
    run = Run()
    now = T0
    delays = []
    for attempt in range(1, 10):
        wt = run.claim(now)
        assert wt.attempt == attempt
        assert wt.task_id == f"{RUN}-wt1"  # same task id, re-readied
        outcome, records = run.fail_task({"type": "NonDeterministicReplayError", "message": "boom"}, now)
        assert outcome == "failed"
        assert history(records) == []
        assert records[0].data["message"] == "boom"
        delays.append(run.state.wt.available_at - now)
        assert dwt.claim(run.state, WF_OWNER, run.state.wt.available_at - 0.5) is None
        now = run.state.wt.available_at
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert run.state.status == "pending"
    # a successful completion resets the counter
    run.claim(now)
    run.complete([activity()], now)
    assert run.state.wt_failures == 0


def test_wake_event_cuts_failure_backoff_short() -> None:
    run = Run()
    run.turn([activity("a"), activity("b")], T0 + 1)
    for seq in (1, 2):
        run.act_claim(seq, T0 + 2)
    run.act_complete(1, T0 + 3)  # wakes: task 2 ready
    now = T0 + 4
    for _ in range(5):  # backoffs 1, 2, 4, 8, 16
        run.claim(now)
        run.fail_task({"message": "boom"}, now)
        now = run.state.wt.available_at
    assert run.state.wt.available_at == T0 + 4 + 1 + 2 + 4 + 8 + 16
    run.act_complete(2, now - 10)  # a new wake event during the backoff: ready at once
    assert run.state.wt.available_at == now - 10
    assert run.claim(now - 10).attempt == 6


# --- continue-as-new -------------------------------------------------------------------


def test_continue_as_new_creates_next_run() -> None:
    run = Run(run_timeout=300, execution_timeout=3600)
    run.turn([{"type": "upsert_search_attributes", "attributes": {"Region": "eu"}}, {"type": "open_condition_wait"}], T0 + 1)
    run.signal("go", T0 + 4)
    records = run.turn([{"type": "continue_as_new"}], T0 + 5)
    em = run.last
    assert types(records) == ["ConditionWaitSatisfied", "WorkflowContinuedAsNew"]
    p = only(records, "WorkflowContinuedAsNew").payload
    assert p["sequence"] == 3
    assert p["continued_to_run_number"] == 2
    assert (run.state.status, run.state.closed_reason) == ("completed", "continued")

    [new] = em.new_runs
    assert p["continued_to_run_id"] == new.run_id != RUN
    assert em.effects == []  # the new run's own actor commits its start (StartRun), not this one
    assert run.state.pending_starts == {new.run_id: new.meta}  # until the new run confirms
    new_records = started_records(new.meta, new.meta["started_at"], accepted=False)
    first = new_records[0]
    assert (first.kind, first.sequence) == ("WorkflowStarted", 1)
    assert len(new_records) == 1
    assert first.payload["continued_from_run_id"] == RUN
    assert first.payload["input"] == ARGS  # absent arguments reuse the current input
    assert first.payload["search_attributes"] == {"Region": "eu"}
    assert first.payload["execution_deadline_at"] == iso(T0 + 3600)  # spans the chain
    assert first.payload["run_deadline_at"] == iso(T0 + 5 + 300)  # per run
    assert new.meta["run_number"] == 2
    assert new.meta["workflow_id"] == "wf-1"

    child = RunState(new.run_id)
    for rec in new_records:
        fold(child, rec)
    assert child.status == "pending"
    assert child.wt is not None and child.wt.task_id == f"{new.run_id}-wt1"
    assert child.step_seq == 0
    run.apply([Record("run_started", T0 + 6, data={"run": new.run_id})])
    assert run.state.pending_starts == {}


def test_continue_as_new_with_overrides() -> None:
    run = Run()
    new_args = {"codec": "avro", "blob": "wwHioz3/VYAiNwwA"}
    run.turn([{"type": "continue_as_new", "arguments": new_args, "workflow_type": "greeter.v2", "queue": "other"}], T0 + 1)
    [new] = run.last.new_runs
    assert new.meta["workflow_type"] == "greeter.v2"
    assert new.meta["task_queue"] == "other"
    assert started_records(new.meta, T0 + 1, accepted=False)[0].payload["input"] == new_args


def test_child_start_creates_child_run_and_links_parent() -> None:
    run = Run()
    records = run.turn([{"type": "start_child_workflow", "workflow_type": "ship", "parent_close_policy": "terminate"}], T0 + 1)
    assert types(records) == ["ChildWorkflowScheduled", "ChildRunStarted"]
    [new] = run.last.new_runs
    assert only(records, "ChildRunStarted").extra["start"] == new.meta  # the parent's record keeps the start
    assert run.state.pending_starts == {new.run_id: new.meta}
    started = started_records(new.meta, new.meta["started_at"], accepted=False)[0]
    assert (started.kind, started.sequence) == ("WorkflowStarted", 1)
    assert started.payload["parent_workflow_run_id"] == RUN
    assert started.payload["parent_sequence"] == 1
    assert run.state.children[1].run_id == new.run_id
    assert run.state.wait_kind() == "child"
    closed = run.commit(
        decide_control.child_closed(
            run.state, 1, {"event": "WorkflowCompleted", "payload": {"output": "blob"}, "run_id": new.run_id, "closed_at": T0 + 5}, T0 + 6
        )
    )
    assert only(closed, "ChildRunCompleted").payload["result"] == "blob"
    assert run.state.wt is not None


# --- next deadline ----------------------------------------------------------------------


def test_next_deadline_is_earliest_relevant_instant() -> None:
    run = Run(run_timeout=1000)
    run.turn([{"type": "start_timer", "delay_seconds": 50}, activity(start_to_close_timeout=30)], T0 + 1)
    run.act_claim(2, T0 + 5)
    # run deadline T0+1000, timer T0+51, start-to-close T0+35, activity lease T0+305
    assert decide_time.next_deadline(run.state, T0 + 5) == T0 + 35
    run.act_complete(2, T0 + 10)
    run.claim(T0 + 10)
    # timer T0+51 beats the task lease T0+70
    assert decide_time.next_deadline(run.state, T0 + 10) == T0 + 51
    run.fail_task({"message": "boom"}, T0 + 11)
    # the failure backoff makes the task ready at T0+12
    assert decide_time.next_deadline(run.state, T0 + 11) == T0 + 12
    run.commit(decide_control.cancel_or_terminate(run.state, "terminate", None, "cmd", T0 + 13))
    assert decide_time.next_deadline(run.state, T0 + 1000) is None


def test_next_deadline_includes_run_deadline() -> None:
    run = Run(run_timeout=100)
    run.turn([{"type": "open_condition_wait"}], T0 + 1)
    assert decide_time.next_deadline(run.state, T0 + 1) == T0 + 100


def test_next_deadline_includes_activity_retry_backoff() -> None:
    run = scheduled_run(retry_policy={"max_attempts": 2, "backoff_seconds": [7]})
    run.act_claim(1, T0 + 2)
    run.act_fail(1, {"message": "x"}, T0 + 3)
    assert decide_time.next_deadline(run.state, T0 + 3) == T0 + 10  # the retry becomes claimable then


def _ready_task_waiting_for_worker() -> tuple[Run, float]:
    return Run(), T0 + 5


def _activity_waiting_for_worker() -> tuple[Run, float]:
    return scheduled_run(), T0 + 5


def _deferred_condition_timeout() -> tuple[Run, float]:
    run = Run()
    run.turn([open_wait(10)], T0 + 1)
    run.signal("approve", T0 + 5)
    run.claim(T0 + 6)
    return run, T0 + 12


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # A ready task or activity with no timeout waits for a worker (its offer is queued):
        # nothing for a tick to do, ever. A past instant here would make the timer service spin.
        (_ready_task_waiting_for_worker, None),
        (_activity_waiting_for_worker, None),
        # The condition timeout (T0+11) is held back by the leased task, claimed at T0+6 with
        # the 60 s default workflow-task lease: the next wake is that lease's expiry. None here
        # is a lost wake-up (a crashed worker would leave the timeout unfired for good).
        (_deferred_condition_timeout, T0 + 66),
    ],
    ids=["ready-workflow-task", "pending-activity", "deferred-condition-timeout"],
)
def test_next_deadline_after_idle_tick_is_the_next_due_instant(build: Any, expected: float | None) -> None:
    run, now = build()
    assert run.tick(now) == []  # nothing is due: tick emits nothing
    assert decide_time.next_deadline(run.state, now) == expected


# --- updates ---------------------------------------------------------------------------


def accept_update(run: Run, update_id: str, now: float, name: str = "push") -> list[Record]:
    return run.commit(decide_control.update(run.state, name, {"codec": "avro", "blob": "AAAA"}, f"cmd-{update_id}", update_id, now))


def test_an_accepted_update_gets_a_task_of_its_own_that_does_not_clear_the_wake() -> None:
    run = Run()
    run.turn([open_wait(None)], T0 + 1)
    assert run.state.wt is None
    records = accept_update(run, "u1", T0 + 2)
    assert types(records) == ["UpdateAccepted"]
    assert only(records, "UpdateAccepted").payload["arguments"] == "AAAA"
    assert run.state.wt is not None and run.state.wt.update_id == "u1"
    run.state.wake = True  # as if something else woke the run meanwhile
    run.claim(T0 + 3)
    assert run.state.wake  # an update task's snapshot does not stand for an ordinary wake-up


def test_update_task_completion_records_applied_then_completed_at_the_open_wait() -> None:
    run = Run()
    run.turn([open_wait(None)], T0 + 1)
    accept_update(run, "u1", T0 + 2)
    run.claim(T0 + 3)
    with pytest.raises(CommandError) as wrong:
        dwt.complete(run.state, run.state.wt.task_id, [{"type": "complete_update", "update_id": "u2"}], T0 + 4)
    assert wrong.value.reason == "invalid_commands"
    records = run.complete([{"type": "complete_update", "update_id": "u1", "result": {"codec": "avro", "blob": "BBBB"}}], T0 + 4)
    assert types(records) == ["UpdateApplied", "UpdateCompleted"]
    applied, done = history(records)
    assert applied.payload["update_name"] == "push" and applied.payload["arguments"] == "AAAA" and applied.payload["sequence"] == 1
    assert done.payload["result"] == "BBBB" and done.payload["payload_codec"] == "avro"
    assert run.state.updates["u1"]["status"] == "completed" and run.state.pending_updates == []
    assert run.state.cond is not None  # an update task does not answer the wait's predicate...
    assert run.state.wt is not None and run.state.wt.update_id is None  # ...an ordinary task re-evaluates it


def test_failed_update_and_updates_left_pending_when_the_run_closes() -> None:
    run = Run()
    run.turn([open_wait(None)], T0 + 1)
    accept_update(run, "u1", T0 + 2)
    accept_update(run, "u2", T0 + 2)
    run.claim(T0 + 3)
    records = run.complete([{"type": "fail_update", "update_id": "u1", "message": "refused", "exception_type": "ValueError"}], T0 + 4)
    assert types(records) == ["UpdateCompleted"]
    assert records[0].payload["failure_id"] and records[0].payload["exception"]["message"] == "refused"
    assert run.state.updates["u1"]["status"] == "failed"
    assert run.state.wt is not None and run.state.wt.update_id == "u2"  # the next update goes first
    run.commit(decide_control.cancel_or_terminate(run.state, "terminate", None, "cmd-t", T0 + 5))
    assert run.state.updates["u2"]["status"] == "failed"
    assert run.state.updates["u2"]["failure"]["reason"] == "run_closed"


# --- plain local activities (extended spec §2.1) ------------------------------------------


def local(name: str = "quote", outcome: str = "completed", attempts: int = 1, **extra: Any) -> dict[str, Any]:
    reports: list[dict[str, Any]] = [
        {"attempt_id": f"{n:064x}", "attempt_number": n, "outcome": "failed", "message": f"try {n}",
         "exception_type": "RuntimeError", "non_retryable": False, "retry_reason": "failure", "backoff_seconds": 1}
        for n in range(1, attempts)
    ]
    last: dict[str, Any] = {"attempt_id": f"{attempts:064x}", "attempt_number": attempts, "outcome": outcome, "heartbeats": []}
    cmd: dict[str, Any] = {"type": "record_local_activity", "activity_type": name, "execution_mode": "local",
                           "arguments": ARGS, "outcome": outcome, **extra}
    if outcome == "completed":
        cmd["result"] = RESULT
    else:
        failure = {"message": "declined", "exception_type": "CardDeclined", "non_retryable": True}
        cmd.update(failure)
        last.update(failure)
    cmd["attempts"] = [*reports, last]
    if attempts > 1:
        cmd["retry_policy"] = {"max_attempts": attempts, "backoff_seconds": [1] * (attempts - 1)}
    return cmd


def test_a_local_step_is_recorded_whole_with_no_task_and_no_wake() -> None:
    run = Run()
    records = run.turn([local(attempts=2), activity("greet")], T0 + 1)
    assert types(records) == [
        "ActivityScheduled", "ActivityStarted", "ActivityRetryScheduled", "ActivityStarted", "ActivityCompleted",
        "ActivityScheduled",
    ]
    local_events = history(records)[:5]
    assert {r.payload["sequence"] for r in local_events} == {1}
    assert all(r.payload["execution_mode"] == "local" and r.payload["local_activity"] for r in local_events)
    assert only(records, "ActivityCompleted").payload["result"] == RESULT["blob"]
    assert history(records)[-1].payload["sequence"] == 2, "the remote activity takes the next step"
    assert sorted(run.state.activities) == [2], "no activity task for the local step"
    assert run.state.wt is None, "the worker already went on: nothing wakes the workflow"
    assert run.state.steps[1] == {"kind": "local_activity", "name": "quote"}


def test_a_failed_local_step_carries_what_replay_reads() -> None:
    run = Run()
    records = run.turn([local(outcome="failed")], T0 + 1)
    failed = only(records, "ActivityFailed").payload
    assert {k: failed[k] for k in ("message", "exception_type", "exception_class", "non_retryable", "failure_category")} == {
        "message": "declined", "exception_type": "CardDeclined", "exception_class": "CardDeclined",
        "non_retryable": True, "failure_category": "activity",
    }
    assert run.state.activities == {} and run.state.wt is None


def test_a_group_with_a_local_member_wakes_when_its_remote_members_resolve() -> None:
    run = Run()
    group = [local("quote", **parallel(1, 2, 0)), activity("greet", **parallel(1, 2, 1))]
    records = run.turn(group, T0 + 1)
    assert [r.payload["sequence"] for r in history(records) if r.kind == "ActivityScheduled"] == [1, 2]
    run.act_claim(2, T0 + 2)
    run.act_complete(2, T0 + 3)
    assert run.state.wt is not None and run.state.wt.available_at == T0 + 3


@pytest.mark.parametrize(("change", "field"), [
    ({"execution_mode": "remote"}, "execution_mode"),
    ({"result": None}, "result"),
    ({"outcome": "timed_out", "result": None, "message": "late", "exception_type": "Timeout", "non_retryable": True}, "timeout_kind"),
    ({"attempts": []}, "attempts"),
    ({"heartbeat_timeout": 10, "start_to_close_timeout": 5}, "heartbeat_timeout"),
    ({"schedule_to_start_timeout": 5}, "schedule_to_start_timeout"),
    ({"cancellation_policy": "abandon"}, "cancellation_policy"),
    ({"retry_policy": {"max_attempts": 1, "initial_interval": 2}}, "retry_policy.initial_interval"),
])
def test_a_malformed_local_report_is_refused_with_its_field(change: dict[str, Any], field: str) -> None:
    run = Run()
    run.claim(T0 + 1)
    wt = run.state.wt
    assert wt is not None
    with pytest.raises(CommandError) as info:
        dwt.complete(run.state, wt.task_id, [{**local(), **change}], T0 + 1)
    assert info.value.status == 422 and f"commands.0.{field}" in info.value.errors, info.value.errors
