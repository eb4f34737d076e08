"""Each structural limit at its boundary: at the limit accepted, one past refused."""

from __future__ import annotations

import pytest

from actors import decide_workflow_task as dwt
from actors.commands import CommandError
from actors.limits import Limits, search_attribute_problem
from tests.unit.test_fold_and_decide import T0, Run, activity

SMALL = Limits(pending_activities=2, pending_children=1, pending_timers=2, search_attributes=2,
               search_attribute_key_length=5, search_attribute_value_bytes=4)


def complete(run: Run, commands: list[dict]) -> None:
    run.claim(T0 + 1)
    run.commit(dwt.complete(run.state, run.state.wt.task_id, commands, T0 + 1, SMALL))


def refused(commands: list[dict]) -> CommandError:
    run = Run()
    with pytest.raises(CommandError) as err:
        complete(run, commands)
    assert err.value.status == 422 and err.value.reason == "structural_limit_exceeded"
    assert run.state.wt is not None and run.state.wt.status == "leased"  # nothing applied
    return err.value


def group(kind: str, n: int) -> list[dict]:
    par = lambda i: {"parallel_group_id": "g", "parallel_group_kind": "mixed", "parallel_group_base_sequence": 1,  # noqa: E731
                     "parallel_group_size": n, "parallel_group_index": i}
    if kind == "activity":
        return [{**activity(), **par(i)} for i in range(n)]
    return [{"type": "start_timer", "delay_seconds": 60, **par(i)} for i in range(n)]


def test_pending_activities_timers_and_children() -> None:
    complete(Run(), group("activity", 2))
    err = refused(group("activity", 3))
    assert (err.extra["limit_kind"], err.extra["current_value"], err.extra["configured_limit"]) == ("pending_activity_count", 3, 2)
    complete(Run(), group("timer", 2))
    assert refused(group("timer", 3)).extra["limit_kind"] == "pending_timer_count"
    complete(Run(), [{"type": "start_child_workflow", "workflow_type": "c"}])
    two_children = [{"type": "start_child_workflow", "workflow_type": "c", "parallel_group_id": "g", "parallel_group_kind": "mixed",
                     "parallel_group_base_sequence": 1, "parallel_group_size": 2, "parallel_group_index": i} for i in range(2)]
    assert refused(two_children).extra["limit_kind"] == "pending_child_count"


def test_search_attributes_count_key_and_value() -> None:
    assert search_attribute_problem({"a": "1234", "bcdef": "x"}, SMALL) is None
    assert "At most 2" in search_attribute_problem({"a": 1, "b": 2, "c": 3}, SMALL)[1]
    assert "at most 5" in search_attribute_problem({"abcdef": 1}, SMALL)[1]
    assert "12345" not in str(search_attribute_problem({"a": "12345"}, SMALL)) and search_attribute_problem({"a": "12345"}, SMALL)
    assert search_attribute_problem({"a": ["1234", "12"]}, SMALL) is None
    complete(Run(), [{"type": "upsert_search_attributes", "attributes": {"a": "1", "b": "2"}}])
    assert refused([{"type": "upsert_search_attributes", "attributes": {"a": "1", "b": "2", "c": "3"}}]).extra["limit_kind"] == "search_attributes"


def test_history_length_at_the_boundary() -> None:
    from dataclasses import replace

    limits = replace(SMALL, history_events=4, pending_activities=10)  # a started run has 2 events
    ok, over = Run(), Run()
    ok.claim(T0 + 1)
    ok.commit(dwt.complete(ok.state, ok.state.wt.task_id, [activity(), activity("b")], T0 + 1, limits))
    assert len(ok.state.events) == 4
    over.claim(T0 + 1)
    with pytest.raises(CommandError) as err:
        dwt.complete(over.state, over.state.wt.task_id, [activity(), activity("b"), activity("c")], T0 + 1, limits)
    assert err.value.extra == {"limit_kind": "history_event_count", "current_value": 5, "configured_limit": 4}
    done = dwt.complete(over.state, over.state.wt.task_id, [{"type": "complete_workflow"}], T0 + 1, replace(limits, history_events=2))
    assert [r.kind for r in done.records if r.is_history] == ["WorkflowCompleted"]  # closing is never refused


def test_unseen_signals_are_counted_until_a_task_sees_them() -> None:
    from dataclasses import replace

    from actors.limits import signals_full

    limits = replace(SMALL, pending_signals=2)
    run = Run()
    run.claim(T0 + 1)  # the first task's snapshot predates both signals
    run.signal("s", T0 + 2, command_id="a")
    assert not signals_full(run.state, limits)
    run.signal("s", T0 + 3, command_id="b")
    assert signals_full(run.state, limits)  # at the limit: the next one is refused
    run.complete([{"type": "open_condition_wait", "condition_key": "k"}], T0 + 4)  # this task saw neither
    assert signals_full(run.state, limits)
    run.claim(T0 + 5)
    run.complete([{"type": "open_condition_wait", "condition_key": "k"}], T0 + 6)  # this one saw both
    assert run.state.unseen_signals == [] and not signals_full(run.state, limits)
