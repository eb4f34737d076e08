"""Schedule behaviours on an in-process node: the overlap policies, jitter, an update, and a
crash between starting a fire's run and recording the fire.

The runs a schedule starts here have no worker, so they stay open until the test closes
them: that is what makes an overlap. The schedules' own spec is yearly, so nothing fires on
its own unless the test moves the injected clock.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from api import views
from persistence.ids import iso
from runtime import schedule_commands
from runtime.node import Node
from runtime.schedules import fire_workflow_id

from .node_harness import ShiftedClock, running_node, wait_for

NS = "default"
YEARLY = {"cron_expressions": ["0 0 1 1 *"]}
HOURLY = {"intervals": [{"every": "PT1H"}]}
ACTION = {"workflow_type": "scheduled", "task_queue": "nobody-polls"}


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def create(node: Node, sid: str, **fields: Any) -> None:
    body = {"schedule_id": sid, "spec": YEARLY, "action": ACTION, **fields}
    status, out = await schedule_commands.create(node.schedules, NS, body)
    assert status == 201, out


async def trigger(node: Node, sid: str) -> dict[str, Any]:
    return await schedule_commands.trigger(node.schedules, NS, sid, {})


async def describe(node: Node, sid: str) -> dict[str, Any]:
    return await schedule_commands.describe(node.schedules, NS, sid)


async def history(node: Node, sid: str) -> list[dict[str, Any]]:
    return (await schedule_commands.history(node.schedules, NS, sid, {"limit": "500"}))["events"]


async def run_status(node: Node, workflow_id: str) -> str:
    return (await node.workflows.describe(NS, workflow_id)).run.status


async def terminate(node: Node, workflow_id: str) -> None:
    result = await node.workflows.close(NS, workflow_id, "terminate", "test closes it", None)
    assert "sequence" in result.answer, result.answer


async def fires_reach(node: Node, sid: str, count: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        view = await describe(node, sid)
        return view if view["fires_count"] >= count else None

    return await wait_for(f"{sid} to have fired {count} times", check)


# --- overlap policies (allow_all is covered by tests/e2e/test_schedules.py) ---------------


async def test_skip_refuses_a_fire_while_the_last_run_is_open(tmp_path: Path) -> None:
    async with running_node(tmp_path) as node:
        await create(node, "skipper", overlap_policy="skip")
        first = await trigger(node, "skipper")
        second = await trigger(node, "skipper")
        view = await describe(node, "skipper")
        assert first["outcome"] == "triggered"
        assert second == {**second, "outcome": "skipped", "reason": "overlap_policy_skip"}
        assert view["fires_count"] == 1 and view["info"]["skipped_trigger_count"] == 1
        assert view["info"]["last_skip_reason"] == "overlap_policy_skip"
        assert await run_status(node, first["workflow_id"]) not in ("cancelled", "terminated")
        await terminate(node, first["workflow_id"])
        third = await trigger(node, "skipper")  # nothing open any more: it fires
        assert third["outcome"] == "triggered" and third["workflow_id"] != first["workflow_id"]


async def test_buffer_one_holds_one_fire_and_starts_it_when_the_run_closes(tmp_path: Path) -> None:
    async with running_node(tmp_path) as node:
        await create(node, "one-deep", overlap_policy="buffer_one")
        first = await trigger(node, "one-deep")
        buffered = await trigger(node, "one-deep")
        full = await trigger(node, "one-deep")
        assert buffered == {"schedule_id": "one-deep", "workflow_id": None, "run_id": None, "reason": None,
                            "outcome": "buffered", "buffer_depth": 1}
        assert full["outcome"] == "buffer_full"
        assert len((await describe(node, "one-deep"))["info"]["buffered_actions"]) == 1
        await terminate(node, first["workflow_id"])
        view = await fires_reach(node, "one-deep", 2)  # the ticker starts the buffered fire by itself
        assert view["info"]["buffered_actions"] == []
        started = view["latest_workflow_instance_id"]
        assert started != first["workflow_id"] and await run_status(node, started) not in ("cancelled", "terminated")
        kinds = [e["event_type"] for e in await history(node, "one-deep")]
        assert kinds.count("ScheduleTriggered") == 2


async def test_buffer_all_starts_every_buffered_fire_one_after_the_other(tmp_path: Path) -> None:
    async with running_node(tmp_path) as node:
        await create(node, "all-deep", overlap_policy="buffer_all")
        first = await trigger(node, "all-deep")
        depths = [(await trigger(node, "all-deep"))["buffer_depth"] for _ in range(2)]
        assert depths == [1, 2]
        await terminate(node, first["workflow_id"])
        view = await fires_reach(node, "all-deep", 2)
        assert len(view["info"]["buffered_actions"]) == 1  # the next waits for the run just started
        await terminate(node, view["latest_workflow_instance_id"])
        view = await fires_reach(node, "all-deep", 3)
        assert view["info"]["buffered_actions"] == []
        started = [e["workflow_instance_id"] for e in await history(node, "all-deep") if e["event_type"] == "ScheduleTriggered"]
        assert len(set(started)) == 3


async def test_a_due_fire_that_finds_the_run_open_is_buffered_and_the_schedule_moves_on(tmp_path: Path) -> None:
    """The ticker's own fire, not a trigger: the buffered fire is kept and the next fire is
    planned (before, neither was committed, and the ticker re-fired the same occurrence in a loop)."""
    clock = ShiftedClock()
    async with running_node(tmp_path, clock) as node:
        await create(node, "ticking", spec=HOURLY, overlap_policy="buffer_one")
        first = await trigger(node, "ticking")
        due = ts((await describe(node, "ticking"))["next_fire_at"])
        clock.offset += due + 1 - clock.now()
        node.schedules._poke.set()

        async def moved_on() -> dict[str, Any] | None:
            view = await describe(node, "ticking")
            return view if view["next_fire_at"] is not None and ts(view["next_fire_at"]) > due else None

        view = await wait_for("the next fire to be planned", moved_on)
        assert ts(view["next_fire_at"]) == pytest.approx(due + 3600, abs=1e-3)
        assert [a["occurrence_time"] for a in view["info"]["buffered_actions"]] == [iso(due)]
        await terminate(node, first["workflow_id"])
        await fires_reach(node, "ticking", 2)


@pytest.mark.parametrize(("policy", "closed"), [("cancel_other", "cancelled"), ("terminate_other", "terminated")])
async def test_cancel_and_terminate_other_close_the_open_run_and_start_a_new_one(tmp_path: Path, policy: str, closed: str) -> None:
    async with running_node(tmp_path) as node:
        await create(node, "replacer", overlap_policy=policy)
        first = await trigger(node, "replacer")
        second = await trigger(node, "replacer")
        assert second["outcome"] == "triggered" and second["workflow_id"] != first["workflow_id"]

        async def first_closed() -> bool:
            return await run_status(node, first["workflow_id"]) == closed

        await wait_for(f"the first run to be {closed}", first_closed)
        described = await node.workflows.describe(NS, first["workflow_id"])
        assert described.run.closed_reason == closed
        assert await run_status(node, second["workflow_id"]) not in ("cancelled", "terminated")
        assert (await describe(node, "replacer"))["fires_count"] == 2


# --- jitter -----------------------------------------------------------------------------


async def test_jitter_delays_the_fire_within_the_window_and_keeps_the_occurrence(tmp_path: Path) -> None:
    clock = ShiftedClock()
    async with running_node(tmp_path, clock) as node:
        for i in range(20):  # the service's own random source: always inside [occurrence, occurrence + jitter)
            await create(node, f"jittery-{i}", spec=HOURLY, jitter_seconds=600)
            delay = ts((await describe(node, f"jittery-{i}"))["next_fire_at"]) % 3600
            assert 0 <= delay < 600
        node.schedules.rng = lambda: 0.5  # a fixed draw: the fire is due half the window late
        await create(node, "halfway", spec=HOURLY, jitter_seconds=600)
        due = ts((await describe(node, "halfway"))["next_fire_at"])
        occurrence = due - 300
        assert occurrence % 3600 == pytest.approx(0, abs=1e-3)
        clock.offset += occurrence + 100 - clock.now()  # past the occurrence, inside the jitter
        await node.schedules._tick((NS, "halfway"))
        assert (await describe(node, "halfway"))["fires_count"] == 0
        clock.offset += 201  # past the jittered time
        node.schedules._poke.set()
        await fires_reach(node, "halfway", 1)
        fired = [e for e in await history(node, "halfway") if e["event_type"] == "ScheduleTriggered"]
        assert ts(fired[0]["payload"]["occurrence_time"]) == pytest.approx(occurrence, abs=1e-3)
        assert fired[0]["workflow_instance_id"] == fire_workflow_id(NS, "halfway", occurrence)


# --- update -----------------------------------------------------------------------------


async def test_an_update_changes_the_schedule_durably_and_replans_it(tmp_path: Path) -> None:
    async with running_node(tmp_path) as node:
        await create(node, "changing", overlap_policy="skip", note="before")
        before = await describe(node, "changing")
        answer = await schedule_commands.update(node.schedules, NS, "changing", {
            "spec": HOURLY, "action": {"task_queue": "elsewhere", "input": ["updated"]}, "overlap_policy": "allow_all",
            "jitter_seconds": 0, "max_runs": 5, "memo": {"owner": "ops"}, "note": "after",
        })
        assert answer == {"schedule_id": "changing", "outcome": "updated"}
    async with running_node(tmp_path) as node:  # the change survived a restart
        view = await describe(node, "changing")
        events = await history(node, "changing")
        fired = await trigger(node, "changing")
        started = views.described(await node.workflows.describe(NS, fired["workflow_id"]))
    assert view["spec"] == HOURLY and view["overlap_policy"] == "allow_all" and view["note"] == "after"
    assert view["action"]["workflow_type"] == "scheduled" and view["action"]["task_queue"] == "elsewhere"
    assert view["memo"] == {"owner": "ops"} and view["max_runs"] == 5 and view["remaining_actions"] == 5
    assert view["next_fire_at"] != before["next_fire_at"] and ts(view["next_fire_at"]) % 3600 == pytest.approx(0, abs=1e-3)
    assert view["created_at"] == before["created_at"] and view["updated_at"] > before["updated_at"]
    updated = [e for e in events if e["event_type"] == "ScheduleUpdated"]
    assert len(updated) == 1
    assert set(updated[0]["payload"]["changed_fields"]) == {"spec", "action", "overlap_policy", "jitter_seconds", "max_runs", "memo", "note"}
    assert started["task_queue"] == "elsewhere" and started["input"] == ["updated"]  # fires use the new action


# --- a crash between the start and the record -------------------------------------------


class Crash(Exception):
    """The node dies after the fire's run was started, before the fire was recorded."""


async def test_a_fire_whose_record_was_lost_is_recorded_after_recovery_without_a_second_run(tmp_path: Path) -> None:
    clock = ShiftedClock()
    attempted: list[dict[str, Any]] = []
    async with running_node(tmp_path, clock) as node:
        await create(node, "crashy", spec=HOURLY, overlap_policy="allow_all")
        occurrence = ts((await describe(node, "crashy"))["next_fire_at"])
        real_commit = node.schedules._commit

        async def crash_before_recording(state: Any, events: list[tuple[str, dict[str, Any]]]) -> None:
            fired = [payload for kind, payload in events if kind == "ScheduleTriggered"]
            if fired:
                attempted.extend(fired)
                raise Crash("killed between the start and the record")
            await real_commit(state, events)

        node.schedules._commit = crash_before_recording  # type: ignore[method-assign]
        clock.offset += occurrence + 1 - clock.now()
        node.schedules._poke.set()
        await wait_for("a fire to be attempted", lambda: attempted)
        assert (await describe(node, "crashy"))["fires_count"] == 0  # nothing recorded
    started_id, started_run = attempted[0]["workflow_instance_id"], attempted[0]["workflow_run_id"]
    async with running_node(tmp_path, clock) as node:  # recovery: same clock, the fire is still due
        view = await fires_reach(node, "crashy", 1)
        fired = [e for e in await history(node, "crashy") if e["event_type"] == "ScheduleTriggered"]
        runs = [{"run_id": row.run_id} for row in (await node.workflows.list_runs(NS, started_id)).runs]
    assert [e["workflow_instance_id"] for e in fired] == [started_id]  # the run started before the crash, once
    assert fired[0]["workflow_run_id"] == started_run and [r["run_id"] for r in runs] == [started_run]
    assert view["latest_workflow_instance_id"] == started_id and view["fires_count"] == 1
    assert {p["workflow_instance_id"] for p in attempted} == {started_id}  # every retry aimed at the same workflow
