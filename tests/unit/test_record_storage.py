"""Journal records keep their stored form: named fields in code, the same CBOR bytes on disk.

``actors.records`` is the one place that knows the stored letters. Journals written before
records had named fields must load unchanged, and a record written now must be byte for
byte what the same record always was. The golden bytes below were produced by the code as
it was before the refactor (records built as letter-keyed dicts); the round trips run over
every kind of record the decisions and the actor emit, so a new kind whose stored form does
not survive the translation fails here.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from actors import decide_control
from actors import messages as m
from actors.clock import TrioClock
from actors.emit import Emitter, new_run_meta, started_records
from actors.limits import DEFAULT as DEFAULT_LIMITS
from actors.records import Record, from_stored, history_event, internal_record, to_stored
from actors.run_state import _EVENT_FOLDS, _INTERNAL_FOLDS, RunState
from persistence import codec
from runtime.engine import Engine
from tests.unit.test_created_runs import BatchJournal, _complete_first_task
from tests.unit.test_engine_resilience import _run
from tests.unit.test_fold_and_decide import T0, Run, activity, open_wait

# --- golden bytes --------------------------------------------------------------------------

# started_records(meta, T0, accepted=False): {"t": "WorkflowStarted", "h": 1, "at": T0, "p": {...}, "x": {"meta": {...}}}
GOLDEN_STARTED = bytes.fromhex(
    "a561746f576f726b666c6f7753746172746564616801626174fb41dad274800000006170a56d776f726b666c6f775f7479"
    "706567677265657465726e776f726b666c6f775f636c617373676772656574657274776f726b666c6f775f696e7374616e"
    "63655f69646477662d316f776f726b666c6f775f72756e5f69646572756e2d3165696e70757464414141416178a1646d65"
    "7461b46672756e5f69646572756e2d31696e616d6573706163656764656661756c746b776f726b666c6f775f6964647766"
    "2d316d776f726b666c6f775f7479706567677265657465726a7461736b5f7175657565646d61696e6a72756e5f6e756d62"
    "65720169617267756d656e747364414141416a737461727465645f6174fb41dad2748000000071657865637574696f6e5f"
    "74696d656f7574f66b72756e5f74696d656f7574f672657865637574696f6e5f646561646c696e65f66c72756e5f646561"
    "646c696e65f66c627573696e6573735f6b6579f6646d656d6fa0717365617263685f61747472696275746573a066706172"
    "656e74f66e636f6e74696e7565645f66726f6df66a636f6d6d616e645f6964f6657368617264006b73686172645f636f75"
    "6e741840"
)
# {"t": "ActivityScheduled", "h": 3, "at": T0 + 1, "p": {...}, "x": {...}, "wt": "run-1-wt1", "cmd": "cmd-1"}
GOLDEN_SCHEDULED = bytes.fromhex(
    "a761747141637469766974795363686564756c6564616803626174fb41dad274804000006170a26873657175656e636501"
    "6d61637469766974795f747970656567726565746178a2657175657565646163747363706172f66277746972756e2d312d"
    "77743163636d6465636d642d31"
)
# {"t": "SignalReceived", "h": 4, "at": T0 + 1, "p": {"signal_name": "go"}, "wt": "run-1-wt1"}
GOLDEN_SIGNAL = bytes.fromhex(
    "a561746e5369676e616c5265636569766564616804626174fb41dad274804000006170a16b7369676e616c5f6e616d6562"
    "676f6277746972756e2d312d777431"
)
# {"t": "wt_claim", "at": T0 + 1, "task": "run-1-wt1", "attempt": 1, "owner": "w", "lease": T0 + 61, "snap": 2}
GOLDEN_CLAIM = bytes.fromhex(
    "a761746877745f636c61696d626174fb41dad27480400000647461736b6972756e2d312d77743167617474656d70740165"
    "6f776e65726177656c65617365fb41dad2748f40000064736e617002"
)
# {"t": "repair_wake", "at": T0 + 1}
GOLDEN_REPAIR = bytes.fromhex("a261746b7265706169725f77616b65626174fb41dad27480400000")
# {"t": "TimerFired", "h": 3, "at": T0 + 2, "p": {"sequence": 2, "timer_id": "run-1-t2"}}
GOLDEN_PLAIN = bytes.fromhex(
    "a461746a54696d65724669726564616803626174fb41dad274808000006170a26873657175656e6365026874696d65725f"
    "69646872756e2d312d7432"
)
# A schedule's audit record, as runtime/schedules.py writes it and runtime/schedule_commands.py reads it.
GOLDEN_SCHEDULE = bytes.fromhex(
    "a46174715363686564756c65547269676765726564616802626174fb41dad274800000006170a274776f726b666c6f775f"
    "696e7374616e63655f69646477662d396f776f726b666c6f775f72756e5f69646572756e2d39"
)
ALL_GOLDEN = [GOLDEN_STARTED, GOLDEN_SCHEDULED, GOLDEN_SIGNAL, GOLDEN_CLAIM, GOLDEN_REPAIR, GOLDEN_PLAIN, GOLDEN_SCHEDULE]


def _stored_bytes(record: Record) -> bytes:
    return codec.dumps(to_stored(record))


def test_records_built_with_named_fields_store_the_bytes_the_letter_keyed_code_stored() -> None:
    meta = new_run_meta(
        run_id="run-1", namespace="default", workflow_id="wf-1", workflow_type="greeter", task_queue="main",
        run_number=1, arguments="AAAA", now=T0, execution_timeout=None, run_timeout=None,
    )
    [started] = started_records(meta, T0, accepted=False)
    state = RunState("run-1")
    state.next_h = 3
    emitter = Emitter(state, T0 + 1, workflow_task_id="run-1-wt1")
    emitter.event("ActivityScheduled", {"sequence": 1, "activity_type": "greet"}, extra={"queue": "acts", "par": None}, command_id="cmd-1")
    emitter.event("SignalReceived", {"signal_name": "go"})
    emitter.internal("wt_claim", task="run-1-wt1", attempt=1, owner="w", lease=T0 + 61, snap=2)
    emitter.internal("repair_wake")
    scheduled, signal, claim, repair = emitter.records
    plain = Emitter(state, T0 + 2)
    fired = plain.event("TimerFired", {"sequence": 2, "timer_id": "run-1-t2"})
    assert _stored_bytes(started) == GOLDEN_STARTED
    assert _stored_bytes(scheduled) == GOLDEN_SCHEDULED
    assert _stored_bytes(signal) == GOLDEN_SIGNAL
    assert _stored_bytes(claim) == GOLDEN_CLAIM
    assert _stored_bytes(repair) == GOLDEN_REPAIR
    assert _stored_bytes(fired) == GOLDEN_PLAIN
    schedule = history_event("ScheduleTriggered", 2, T0, {"workflow_instance_id": "wf-9", "workflow_run_id": "run-9"})
    assert _stored_bytes(schedule) == GOLDEN_SCHEDULE


def test_stored_bytes_read_back_with_their_named_fields_and_store_unchanged() -> None:
    for body in ALL_GOLDEN:
        assert _stored_bytes(from_stored(codec.loads(body))) == body
    scheduled = from_stored(codec.loads(GOLDEN_SCHEDULED))
    assert (scheduled.kind, scheduled.sequence, scheduled.at) == ("ActivityScheduled", 3, T0 + 1)
    assert scheduled.payload == {"sequence": 1, "activity_type": "greet"}
    assert scheduled.extra == {"queue": "acts", "par": None}
    assert (scheduled.workflow_task_id, scheduled.command_id, scheduled.data) == ("run-1-wt1", "cmd-1", {})
    assert scheduled.is_history
    claim = from_stored(codec.loads(GOLDEN_CLAIM))
    assert claim == internal_record("wt_claim", T0 + 1, task="run-1-wt1", attempt=1, owner="w", lease=T0 + 61, snap=2)
    assert not claim.is_history and claim.sequence is None and claim.payload == {} and claim.extra == {}
    started = from_stored(codec.loads(GOLDEN_STARTED))
    assert started.extra["meta"]["workflow_id"] == "wf-1" and started.workflow_task_id is None and started.command_id is None


def test_an_absent_extra_task_or_command_is_not_stored() -> None:
    """As before: an empty ``x`` and a missing ``wt``/``cmd`` were left out of the map."""
    record = history_event("TimerFired", 7, T0, {"sequence": 1}, extra={}, workflow_task_id=None, command_id="")
    assert to_stored(record) == {"t": "TimerFired", "h": 7, "at": T0, "p": {"sequence": 1}}
    assert to_stored(internal_record("wt_done", T0, task="t-1")) == {"t": "wt_done", "at": T0, "task": "t-1"}


# --- every record the decisions emit -------------------------------------------------------

# Internal records written by the actor itself rather than by a decision (wt_claim and
# wt_release are written by both: a heartbeat, a deregistering worker).
ACTOR_ONLY = {"command", "act_late", "act_hb", "act_lease", "run_started", "repair_wake", "wt_claim", "wt_release"}


class RecordingRun(Run):
    """A ``Run`` that keeps every record it folds."""

    def __init__(self, seen: list[Record], **options: Any) -> None:
        self.seen = seen
        super().__init__(**options)

    def apply(self, records: list[Record]) -> list[Record]:
        self.seen.extend(records)
        return super().apply(records)


def _activities(seen: list[Record]) -> None:
    run = RecordingRun(seen)
    run.turn([activity(retry_policy={"max_attempts": 3}), activity("b"), activity("c", start_to_close_timeout=10)], T0 + 1)
    run.act_claim(1, T0 + 2)
    run.act_fail(1, {"message": "flaky", "type": "Flaky"}, T0 + 3)  # ActivityRetryScheduled
    run.act_claim(1, T0 + 4)
    run.tick(run.state.activities[1].lease_expires_at)  # act_release
    run.act_claim(1, T0 + 400)
    run.act_complete(1, T0 + 401)
    run.act_claim(2, T0 + 402)
    run.act_fail(2, {"message": "final", "type": "Final"}, T0 + 403)  # ActivityFailed
    run.act_claim(3, T0 + 404)
    run.tick(T0 + 420)  # ActivityTimedOut


def _timers_markers_and_signals(seen: list[Record]) -> None:
    run = RecordingRun(seen, accepted=False)
    run.turn(
        [
            {"type": "start_timer", "delay_seconds": 5},
            {"type": "record_side_effect", "result": "AAAA"},
            {"type": "record_version_marker", "change_id": "fraud", "version": 1, "min_supported": -1, "max_supported": 1},
            {"type": "upsert_search_attributes", "attributes": {"Region": "eu"}},
            {"type": "upsert_memo", "entries": {"codec": "avro", "blob": "wwHioz3/VYAiNw4CBmtleQoCYQA="}},
        ],
        T0 + 1,
    )
    run.tick(T0 + 6)  # TimerFired
    run.turn([open_wait(60)], T0 + 7)
    run.signal("approve", T0 + 8, command_id="cmd-sig")
    run.turn([activity()], T0 + 9)  # ConditionWaitSatisfied, TimerCancelled


def _updates_and_task_failures(seen: list[Record]) -> None:
    run = RecordingRun(seen)
    run.turn([open_wait(None)], T0 + 1)
    run.commit(decide_control.update(run.state, "push", {"codec": "avro", "blob": "AAAA"}, "cmd-u1", "u1", T0 + 2))
    run.turn([{"type": "complete_update", "update_id": "u1", "result": {"codec": "avro", "blob": "BBBB"}}], T0 + 3)
    run.claim(T0 + 4)
    run.fail_task({"type": "NonDeterministicReplayError", "message": "boom"}, T0 + 4)  # wt_fail
    wt = run.claim(T0 + 10)
    run.tick(wt.lease_expires_at)  # wt_release
    run.claim(T0 + 100)
    run.fail_task({"type": "WorkflowTaskWaitingForHistory", "message": "waiting"}, T0 + 100)


def _children(seen: list[Record]) -> None:
    run = RecordingRun(seen)
    child = {"type": "start_child_workflow", "workflow_type": "ship", "parent_close_policy": "terminate"}
    run.turn([child, child, child, child, child], T0 + 1)
    endings = [
        ("WorkflowCompleted", {"output": "blob"}),
        ("WorkflowFailed", {"message": "no", "exception_class": "Exception"}),
        ("WorkflowCancelled", {"message": "stop"}),
        ("WorkflowTerminated", {"message": "stop"}),
    ]
    for seq, (event, payload) in enumerate(endings, 1):
        link = run.state.children[seq]
        info = {"event": event, "payload": payload, "run_id": link.run_id, "closed_at": T0 + 5}
        run.commit(decide_control.child_closed(run.state, seq, info, T0 + 6))
    run.commit(decide_control.child_continued(run.state, 5, "run-next", 2, T0 + 7))


def _closes(seen: list[Record]) -> None:
    RecordingRun(seen).turn([{"type": "complete_workflow", "result": {"codec": "avro", "blob": "AAAA"}}], T0 + 1)
    RecordingRun(seen).turn([{"type": "fail_workflow", "message": "no", "exception_type": "Nope"}], T0 + 1)
    RecordingRun(seen, run_timeout=100, execution_timeout=1000).turn([{"type": "continue_as_new"}], T0 + 1)
    for kind in ("cancel", "terminate"):
        run = RecordingRun(seen)
        run.turn([activity(), {"type": "start_timer", "delay_seconds": 500},
                  {"type": "start_child_workflow", "workflow_type": "kid", "parent_close_policy": "terminate"}], T0 + 1)
        run.commit(decide_control.cancel_or_terminate(run.state, kind, "asked", f"cmd-{kind}", T0 + 2))
        child = next(iter(run.state.parent_close))
        run.commit(decide_control.parent_close_done(run.state, child, "failed" if kind == "cancel" else "applied", "gone", T0 + 3))
        assert not run.state.parent_close
    timed_out = RecordingRun(seen, run_timeout=100)
    timed_out.turn([activity()], T0 + 1)
    timed_out.tick(T0 + 100)


def _cooperative(seen: list[Record]) -> None:
    from actors import decide_cancellation as dc

    run = RecordingRun(seen)
    run.turn([activity(cancellation_policy="wait_cancellation_completed")], T0 + 1)
    run.act_claim(1, T0 + 2)
    run.commit(dc.request(run.state, "req-1", "asked", 60, T0 + 3))
    wt = run.claim(T0 + 4)
    delivery = dc.parse_delivery({"request_id": "req-1", "sequence": 1, "call_kind": "activity"})
    run.commit(dc.deliver(run.state, wt.task_id, delivery, T0 + 4)[0])  # coop_wait
    em = Emitter(run.state, T0 + 5)
    dc.stop_activity(em, run.state.activities[1], "req-1", acknowledged=True)
    run.commit(em)
    wt = run.claim(T0 + 6)
    run.commit(dc.deliver(run.state, wt.task_id, delivery, T0 + 6)[0])  # CooperativeCancellationDelivered
    em = Emitter(run.state, T0 + 7)
    em.internal("act_ack", attempt="run-1-a1.1")
    run.commit(em)
    parent = RecordingRun(seen)
    parent.turn([{"type": "start_child_workflow", "workflow_type": "kid", "cancellation_policy": "wait_cancellation_completed"}], T0 + 1)
    parent.commit(dc.request(parent.state, "req-2", None, 60, T0 + 2))
    wt = parent.claim(T0 + 3)
    parent.commit(dc.deliver(parent.state, wt.task_id, dc.parse_delivery({"request_id": "req-2", "sequence": 1, "call_kind": "child"}),
                             T0 + 3)[0])  # coop_child, coop_wait
    em = Emitter(parent.state, T0 + 4)  # the child recorded the request (the actor writes it)
    em.internal("coop_child_done", run=parent.state.children[1].run_id, outcome="applied")
    parent.commit(em)


def _prepared(seen: list[Record]) -> None:
    from actors import prepared_local as pl
    from tests.unit.test_prepared_local_decisions import desc, outcome, prepare

    run = RecordingRun(seen)
    run.claim(T0 + 1)
    body = {"checkpoint_id": "c" * 64, "start_sequence": 1, "commands": [{"type": "record_side_effect", "result": "wwHioz3/VYAiNwQO"}]}
    run.commit(pl.checkpoint(run.state, body, T0 + 2, 60.0, DEFAULT_LIMITS, group=False)[0])  # checkpoint
    prepare(run, seq=2, retry_policy={"max_attempts": 2}, heartbeat_timeout=5)
    em = Emitter(run.state, T0 + 4)
    pl.heartbeat(run.state, em, run.state.locals[2], {"details": {"n": 1}}, T0 + 4)
    run.commit(em)  # ActivityHeartbeatRecorded
    outcome(run, {"outcome": "failed", "message": "x", "exception_type": "E", "non_retryable": False}, T0 + 5, seq=2)  # wt_defer
    assert desc()["execution_mode"] == "local"


def _streams(seen: list[Record]) -> None:
    from tests.unit.test_message_stream_decisions import _complete_with_cursor, append, wait

    run = RecordingRun(seen)
    append(run, "m-1")  # msg_held
    append(run, "m-2")
    run.turn([wait(0)], T0 + 3)
    run.claim(T0 + 4)
    run.commit(_complete_with_cursor(run, 1, [wait(1)], T0 + 4))  # msg_cursor


def _workflow_streams(seen: list[Record]) -> None:
    run = RecordingRun(seen)
    items = [{"payload": {"codec": "avro", "blob": "AAAA"}, "idempotency_key": "k", "item_type": "progress"}]
    run.turn([{"type": "record_side_effect", "result": "wwHioz3/VYAiNwA=",
               "workflow_stream": {"operation": "append", "stream_name": "out", "items": items, "command_identity": "c"}},
              {"type": "start_timer", "delay_seconds": 60}], T0 + 1)
    em = Emitter(run.state, T0 + 2)  # what the actor writes for a client's append and close
    em.internal("ws_append", stream="out", items=[{"payload": {"codec": "avro", "blob": "BBBB"}, "payload_codec": "avro"}])
    em.internal("ws_close", stream="out", error_reason="stopped", retention=60)
    run.commit(em)
    assert [i["origin"] for i in run.state.wstreams["out"]["items"]] == ["workflow", "client"]


def _operators(seen: list[Record]) -> None:
    from actors import decide_operator, redrive

    stuck = RecordingRun(seen)
    stuck.turn([activity()], T0 + 1)
    stuck.commit(decide_operator.repair(stuck.state, T0 + 100, "cmd-repair")[0])  # RepairRequested
    start = len(seen)
    failed = RecordingRun(seen)
    failed.turn([activity(), activity("b")], T0 + 1)
    failed.act_claim(1, T0 + 2)
    failed.act_complete(1, T0 + 3)
    failed.act_claim(2, T0 + 4)
    failed.act_fail(2, {"message": "final", "non_retryable": True}, T0 + 5)
    failed.turn([{"type": "fail_workflow", "message": "b", "failed_step_sequence": 2}], T0 + 6)
    failed.commit(decide_operator.archive(failed.state, T0 + 7, "cmd-archive", "tier")[0])  # ArchiveRequested, WorkflowArchived
    meta = redrive.new_meta(failed.state, "run-2", T0 + 8, redrive.cut(failed.state))
    em = Emitter(failed.state, T0 + 8)
    em.internal("redriven", request_id="r", command_id="cmd-redrive", start=meta)
    failed.commit(em)
    seen.extend(redrive.opening(meta, seen[start:]))  # the new run's: WorkflowStarted, the copy, act_fresh


def _decision_records() -> list[Record]:
    seen: list[Record] = []
    for scenario in (_activities, _timers_markers_and_signals, _updates_and_task_failures, _children, _closes, _cooperative, _prepared,
                     _streams, _workflow_streams, _operators):
        scenario(seen)
    return seen


def _assert_round_trips(records: list[Record]) -> None:
    for record in records:
        stored = to_stored(record)
        assert to_stored(from_stored(stored)) == stored
        assert list(to_stored(from_stored(stored))) == list(stored)  # same keys in the same order: same bytes
        assert from_stored(stored) == record
        body = codec.dumps(stored)
        assert codec.dumps(to_stored(from_stored(codec.loads(body)))) == body


def test_every_record_the_decisions_emit_round_trips_through_its_stored_form() -> None:
    records = _decision_records()
    _assert_round_trips(records)
    kinds = {record.kind for record in records}
    assert set(_EVENT_FOLDS) <= kinds, sorted(set(_EVENT_FOLDS) - kinds)
    assert set(_INTERNAL_FOLDS) - ACTOR_ONLY <= kinds, sorted(set(_INTERNAL_FOLDS) - ACTOR_ONLY - kinds)
    assert any(r.extra for r in records) and any(r.command_id for r in records) and any(r.workflow_task_id for r in records)


# --- the records only the actor writes -----------------------------------------------------


async def test_every_record_the_actor_writes_round_trips_through_its_stored_form(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = BatchJournal()
    engine = Engine(journal, TrioClock(), idle_seconds=600)
    run_id = _run(journal, TrioClock().now())
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        child = {"type": "start_child_workflow", "workflow_type": "ship", "parent_close_policy": "abandon"}
        await _complete_first_task(engine, run_id, [activity(), child, open_wait(None)])  # the child's start is confirmed: run_started
        await engine.ask(run_id, m.Signal(name="s", arguments=None, command_id="c-1", request_id="r-1"))  # command
        await engine.ask(run_id, m.Tick())
        task_id = engine.actors[run_id].state.wt.task_id
        task = await engine.ask(run_id, m.ClaimWorkflowTask(task_id=task_id, owner="wf"))
        attempt = task["workflow_task_attempt"]
        await engine.ask(run_id, m.WorkflowTaskHeartbeat(task_id=task_id, owner="wf", attempt=attempt))  # wt_claim
        await engine.ask(run_id, m.ReleaseOwner(owner="wf"))  # wt_release
        engine.actors[run_id].state.wt = None  # as if its task record had been lost (see test_system_ops)
        await engine.ask(run_id, m.Repair())  # repair_wake
        claimed = await engine.ask(run_id, m.ClaimActivity(seq=1, owner="act"))
        await trio.sleep(200)  # past half the lease: the renewal is journaled
        await engine.ask(run_id, m.ActivityOp(op="renew_lease", task_id=claimed["task_id"],
                                              attempt_id=claimed["activity_attempt_id"], owner="act"))  # act_lease
        await engine.ask(run_id, m.ActivityHeartbeat(
            task_id=claimed["task_id"], attempt_id=claimed["activity_attempt_id"], owner="act", progress={"details": {"n": 1}},
        ))  # act_hb
        task = await engine.ask(run_id, m.ClaimWorkflowTask(task_id=engine.actors[run_id].state.wt.task_id, owner="wf"))
        await engine.ask(run_id, m.CompleteWorkflowTask(
            task_id=task["task_id"], owner="wf", attempt=task["workflow_task_attempt"], commands=[{"type": "complete_workflow"}],
        ))
        await engine.ask(run_id, m.CompleteActivity(
            task_id=claimed["task_id"], attempt_id=claimed["activity_attempt_id"], owner="act", result=None,
        ))  # act_late: the run closed while the attempt ran
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    stored = [codec.loads(body) for bodies in journal.records.values() for body in bodies]
    for item in stored:
        assert to_stored(from_stored(item)) == item
        assert codec.dumps(to_stored(from_stored(item))) == codec.dumps(item)
    kinds = {from_stored(item).kind for item in stored}
    assert ACTOR_ONLY <= kinds, sorted(ACTOR_ONLY - kinds)


def test_the_fold_of_stored_records_is_the_fold_of_the_records() -> None:
    """Loading a journal (bytes -> from_stored -> fold) rebuilds what the decisions folded."""
    from actors.run_actor import fold_records

    seen: list[Record] = []
    run = RecordingRun(seen)
    run.turn([activity(), {"type": "start_timer", "delay_seconds": 5}], T0 + 1)
    run.act_claim(1, T0 + 2)
    run.act_complete(1, T0 + 3)
    run.tick(T0 + 6)
    loaded, damage = fold_records(run.state.run_id, [codec.dumps(to_stored(record)) for record in seen])
    assert damage == []
    assert loaded == run.state
