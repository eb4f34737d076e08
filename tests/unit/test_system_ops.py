"""Operator passes over a real engine's runs: the actors decide, the test moves the clock.

The passes must go through the runs' own actors (``RunActor._on_repair``, the tick that
enforces timeouts), so these tests run a real ``Engine`` over an in-memory journal instead of
a fake that would re-implement the actors' rules.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from actors import messages as m
from actors.clock import TrioClock
from actors.records import from_stored
from persistence import codec
from runtime.engine import Engine
from runtime.system_ops import SystemOps
from tests.unit.test_engine_resilience import FakeJournal, _run

ACTIVITY = {"type": "schedule_activity", "activity_type": "greet", "queue": "acts", "arguments": None}


async def _workflow_task(engine: Engine, run_id: str) -> str:
    [view] = [v for v in engine.work_views() if v.run_id == run_id]
    assert view.workflow_task is not None
    return view.workflow_task.task_id


async def _schedule_activity(engine: Engine, run_id: str, **policy: Any) -> None:
    """The workflow's first task schedules one activity, which a worker then claims."""
    await engine.ask(run_id, m.Tick())
    task_id = await _workflow_task(engine, run_id)
    task = await engine.ask(run_id, m.ClaimWorkflowTask(task_id=task_id, owner="wf"))
    await engine.ask(
        run_id,
        m.CompleteWorkflowTask(task_id=task_id, owner="wf", attempt=task["workflow_task_attempt"], commands=[{**ACTIVITY, **policy}]),
    )
    assert await engine.ask(run_id, m.ClaimActivity(seq=1, owner="act")) is not None


def _types(journal: FakeJournal, run_id: str) -> list[str]:
    return [from_stored(codec.loads(body)).kind for body in journal.records[run_id]]


async def test_an_activity_past_its_start_to_close_is_listed_and_enforced(mock_clock: trio.testing.MockClock) -> None:
    journal = FakeJournal()
    clock = TrioClock()
    engine = Engine(journal, clock, idle_seconds=600)
    run_id = _run(journal, clock.now())
    ops = SystemOps(engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await _schedule_activity(engine, run_id, start_to_close_timeout=5)
        assert ops.activity_timeout_status(100)["expired_count"] == 0
        # The deadline passes while the timer service has not run yet (no checkpoint between
        # the jump and the scan): the operator's pass sees it and enforces it through the actor.
        mock_clock.jump(6)
        status = ops.activity_timeout_status(100)
        assert status["expired_count"] == 1 and not status["scan_pressure"]
        [execution_id] = status["expired_execution_ids"]
        out = await ops.activity_timeout_pass([execution_id, "nope"], 100)
        assert [r["outcome"] for r in out["results"]] == ["enforced", "skipped"]
        assert out["enforced"] == 1 and out["failed"] == 0
        assert {"ActivityTimedOut", "ActivityRetryScheduled"} & set(_types(journal, run_id))
        assert ops.activity_timeout_status(100)["expired_count"] == 0
        nursery.cancel_scope.cancel()


async def test_repair_reoffers_stale_tasks_and_journals_a_task_for_a_run_without_one(
    mock_clock: trio.testing.MockClock,
) -> None:
    journal = FakeJournal()
    clock = TrioClock()
    engine = Engine(journal, clock, idle_seconds=600)
    stale = _run(journal, clock.now())  # its first workflow task stays ready; nobody takes it
    stuck = _run(journal, clock.now())
    ops = SystemOps(engine)
    resent: list[str | None] = []
    original_resend = engine.offers.resend
    engine.offers.resend = lambda run_id=None: resent.append(run_id) or original_resend(run_id)  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.ask(stale, m.Tick())
        await engine.ask(stuck, m.Tick())
        task_id = await _workflow_task(engine, stuck)
        await engine.ask(stuck, m.ClaimWorkflowTask(task_id=task_id, owner="wf"))
        # As if its task record had been lost: running, no task, nothing to wait for.
        engine.actors[stuck].state.wt = None
        mock_clock.jump(60)
        cands = ops.repair_status()["candidates"]
        assert (cands["existing_task_candidates"], cands["missing_task_candidates"]) == (1, 1)
        out = await ops.repair_pass(None, None)
        assert out["repaired_existing_tasks"] == 1 and out["repaired_missing_tasks"] == 1
        assert [r for r in resent if r is not None] == [stale]  # None: the offer book's own periodic resend
        assert "repair_wake" in _types(journal, stuck)  # journaled: the task survives a restart
        [view] = [v for v in engine.work_views() if v.run_id == stuck]
        assert view.workflow_task is not None and view.workflow_task.status == "ready"
        assert ops.repair_status()["candidates"]["missing_task_candidates"] == 0
        # A second pass finds nothing missing: the actor's own rule refuses a second task.
        assert await engine.ask(stuck, m.Repair()) is False
        nursery.cancel_scope.cancel()


class RefusingJournal(FakeJournal):
    """Refuses every append that touches one run, as a full disk would."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: set[str] = set()

    async def append(self, batch) -> None:  # noqa: ANN001 - the journal Batch
        if any(run_id in self.refused for run_id, _, _ in batch.records):
            raise RuntimeError("disk full")
        await super().append(batch)


async def _stuck(engine: Engine, run_id: str) -> None:
    await engine.ask(run_id, m.Tick())
    task_id = await _workflow_task(engine, run_id)
    await engine.ask(run_id, m.ClaimWorkflowTask(task_id=task_id, owner="wf"))
    engine.actors[run_id].state.wt = None  # as if its task record had been lost


async def test_a_failing_run_is_reported_and_the_pass_goes_on(mock_clock: trio.testing.MockClock) -> None:
    """The routes answer 207 when a pass reports failures; here one run's journal refuses writes."""
    journal = RefusingJournal()
    clock = TrioClock()
    engine = Engine(journal, clock, idle_seconds=600)
    good = _run(journal, clock.now())
    bad = _run(journal, clock.now())
    ops = SystemOps(engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await _stuck(engine, good)
        await _stuck(engine, bad)
        journal.refused.add(bad)
        out = await ops.repair_pass(None, None)
        assert out["repaired_missing_tasks"] == 1
        assert [f["run_id"] for f in out["missing_run_failures"]] == [bad]
        assert "disk full" in out["missing_run_failures"][0]["error"]
        assert "repair_wake" in _types(journal, good) and "repair_wake" not in _types(journal, bad)
        nursery.cancel_scope.cancel()
