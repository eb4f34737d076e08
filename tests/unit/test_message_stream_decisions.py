"""Message streams decided and folded by hand (extended spec §7.1): positions, dedupe by message
id, one message recorded per wait on its stream (the rest held, durably, until the next wait),
cursors, and what a continuation inherits."""

from __future__ import annotations

from actors import message_streams as ms
from actors.emit import Emitter
from tests.unit.test_fold_and_decide import T0, Run, types

ENV = {"codec": "avro", "blob": "wwHioz3/VYAiNwwA"}


def wait(cursor: int) -> dict:
    return {"type": "open_condition_wait", "condition_key": f"message-stream:inbox:{cursor}"}


def append(run: Run, message_id: str, now: float = T0 + 2) -> tuple[int, bool]:
    em, position, duplicate = ms.append(run.state, "inbox", message_id, ENV, f"cmd-{message_id}", now)
    if em.records:
        run.commit(em)
    return position, duplicate


def test_messages_before_a_wait_are_held_and_each_wait_gets_one() -> None:
    run = Run()
    assert append(run, "m-1") == (1, False)
    assert append(run, "m-2") == (2, False)
    assert append(run, "m-1") == (1, True), "a repeated id is the same message"
    assert run.state.events[-1]["event_type"] == "WorkflowStarted", "nothing in history before the run waits on the stream"
    assert [m["id"] for m in run.state.streams["inbox"]["held"]] == ["m-1", "m-2"]
    records = run.turn([wait(0)], T0 + 3)
    assert types(records) == ["ConditionWaitOpened", "SignalReceived"], "the new wait gets the oldest held message"
    opened, message = [r for r in records if r.is_history]
    assert opened.payload["sequence"] == message.payload["workflow_sequence"]
    assert [m["id"] for m in run.state.streams["inbox"]["held"]] == ["m-2"]
    assert append(run, "m-3") == (3, False)
    assert [m["id"] for m in run.state.streams["inbox"]["held"]] == ["m-2", "m-3"], "a woken wait takes no second message"
    run.claim(T0 + 4)
    records = run.complete([wait(1)], T0 + 4)
    assert types(records)[-1] == "SignalReceived"


def test_cursors_advance_monotonically_and_a_continuation_inherits_unread_messages() -> None:
    run = Run()
    for message_id in ("m-1", "m-2", "m-3"):
        append(run, message_id)
    run.turn([wait(0)], T0 + 3)
    run.claim(T0 + 4)
    run.commit(_complete_with_cursor(run, 1, [wait(1)], T0 + 4))
    assert run.state.streams["inbox"]["cursor"] == 1
    carried = ms.carry(run.state, Emitter(run.state, T0 + 5))["inbox"]
    assert carried["cursor"] == 1 and [m["id"] for m in carried["pending"]] == ["m-2", "m-3"]
    meta = {**run.meta, "run_id": "run-2", "message_streams": {"inbox": carried}}
    seeded = ms.seed_records(meta, 3, T0 + 6)
    assert [r.kind for r in seeded] == ["SignalReceived", "msg_held", "msg_held"], "the cursor first, messages held"


def _complete_with_cursor(run: Run, through: int, commands: list, now: float) -> Emitter:
    from actors import decide_workflow_task as dwt

    wt = run.state.wt
    assert wt is not None
    return dwt.complete(run.state, wt.task_id, commands, now, cursors=[{"stream_name": "inbox", "through_position": through}])
