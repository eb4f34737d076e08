"""The typed schedule state and its stored form: the journal's rows keep exactly the keys
(and key order) they had when the state was a plain dict, so old rows load and new rows are
read by older nodes."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from runtime.schedule_state import ScheduleState

STORED = {  # a row as the dict-based code wrote it, every key in its order
    "namespace": "default", "schedule_id": "nightly", "spec": {"cron_expressions": ["0 3 * * *"], "timezone": "Europe/Paris"},
    "action": {"workflow_type": "report", "task_queue": "q", "input": {"codec": "avro", "blob": "AA=="}},
    "overlap_policy": "buffer_all", "jitter_seconds": 30, "max_runs": 5, "remaining_actions": 3,
    "memo": {"owner": "ops"}, "search_attributes": {"Team": "core"}, "note": "n", "status": "active", "paused_at": None,
    "deleted_at": None, "created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-02T00:00:00.000000Z",
    "next_fire_at": 1767322812.5, "next_occurrence": 1767322800.0, "last_fired_at": "2026-01-02T02:00:00.000000Z",
    "fires_count": 2, "failures_count": 1,
    "recent_actions": [{"workflow_id": "w", "run_id": "r", "outcome": "triggered", "fired_at": "2026-01-02T02:00:00.000000Z"}],
    "buffered_actions": [{"buffered_at": "2026-01-02T02:00:00.000000Z", "occurrence_time": "2026-01-02T02:00:00.000000Z"}],
    "skipped_trigger_count": 4, "last_skip_reason": "overlap_policy_skip", "last_skipped_at": "2026-01-02T01:00:00.000000Z",
    "latest_workflow_instance_id": "w", "event_seq": 9,
}


def test_the_stored_form_round_trips_key_for_key_and_in_order() -> None:
    state = ScheduleState.from_record(STORED)
    record = state.to_record()
    assert record == STORED and list(record) == list(STORED)
    assert state.buffered_actions == tuple(STORED["buffered_actions"]) and state.next_fire_at == 1767322812.5


def test_a_new_schedule_is_stored_with_the_defaults_the_dict_had() -> None:
    record = ScheduleState(namespace="default", schedule_id="s", spec={"intervals": [{"every": "PT1M"}]},
                           action={"workflow_type": "t"}, created_at="c", updated_at="u").to_record()
    assert list(record) == list(STORED)
    assert {k: v for k, v in record.items() if k not in ("namespace", "schedule_id", "spec", "action", "created_at", "updated_at")} == {
        "overlap_policy": "skip", "jitter_seconds": 0, "max_runs": None, "remaining_actions": None, "memo": {},
        "search_attributes": {}, "note": None, "status": "active", "paused_at": None, "deleted_at": None, "next_fire_at": None,
        "next_occurrence": None, "last_fired_at": None, "fires_count": 0, "failures_count": 0, "recent_actions": [],
        "buffered_actions": [], "skipped_trigger_count": 0, "last_skip_reason": None, "last_skipped_at": None,
        "latest_workflow_instance_id": None, "event_seq": 0,
    }


def test_the_state_is_immutable_and_detached_from_its_record() -> None:
    record = {k: copy.deepcopy(v) for k, v in STORED.items() if k not in ("fires_count", "recent_actions")}  # a sparse older row
    state = ScheduleState.from_record(record)
    assert state.fires_count == 0 and state.recent_actions == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.status = "paused"  # type: ignore[misc]
    record["memo"]["owner"] = "someone else"  # the journal's object changing does not change the state
    assert state.memo == {"owner": "ops"}
    written = state.to_record()
    written["spec"]["timezone"] = "UTC"
    assert state.spec["timezone"] == "Europe/Paris"
    assert dataclasses.replace(state, note="m") != state and dataclasses.replace(state, note="n") == state
