"""Operator passes over an engine's runs, with a fake engine whose clock the test moves."""

from __future__ import annotations

from typing import Any

import trio

from actors import decide_time
from runtime.system_ops import SystemOps
from tests.unit.test_fold_and_decide import T0, Run, activity


class FakeActor:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.reoffered = 0

    @property
    def state(self) -> Any:
        return self.run.state


class FakeOffers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def resend(self, run_id: str | None = None) -> int:
        self.engine.actors[run_id].reoffered += 1
        return 1


class FakeClock:
    def __init__(self, now: float) -> None:
        self.at = now

    def now(self) -> float:
        return self.at


class FakeEngine:
    """The slice of the engine SystemOps uses: actors, clock, ask, loaded."""

    def __init__(self, runs: dict[str, Run], now: float) -> None:
        self.actors = {rid: FakeActor(r) for rid, r in runs.items()}
        self.clock = FakeClock(now)
        self.offers = FakeOffers(self)

    async def ask(self, run_id: str, kind: str, **_: Any) -> Any:
        run = self.actors[run_id].run
        if kind == "tick":
            run.commit(decide_time.tick(run.state, self.clock.now()))
            return None
        if kind == "repair":
            if run.state.wt is None and run.state.status in ("pending", "running"):
                run.apply([{"t": "repair_wake", "at": self.clock.now()}])
                return True
            return False
        raise AssertionError(kind)

    async def loaded(self, run_id: str) -> Any:
        return self.actors[run_id]


def _engine(runs: dict[str, Run], now: float) -> FakeEngine:
    return FakeEngine(runs, now)


def test_an_activity_past_its_start_to_close_is_listed_and_enforced() -> None:
    run = Run()
    run.turn([activity(start_to_close_timeout=5)], T0 + 1)
    run.act_claim(1, T0 + 2)
    engine = _engine({"r1": run}, T0 + 3)
    ops = SystemOps(engine)  # type: ignore[arg-type]
    assert ops.activity_timeout_status(100)["expired_count"] == 0
    engine.clock.at = T0 + 8  # the deadline (T0 + 7) passed while the timer service was not looking
    status = ops.activity_timeout_status(100)
    assert status["expired_execution_ids"] == ["run-1-a1"] and not status["scan_pressure"]
    out = trio.run(ops.activity_timeout_pass, ["run-1-a1", "nope"], 100)
    assert [r["outcome"] for r in out["results"]] == ["enforced", "skipped"]
    assert out["enforced"] == 1 and out["failed"] == 0
    assert any(e["event_type"] in ("ActivityTimedOut", "ActivityRetryScheduled") for e in run.state.events)
    assert ops.activity_timeout_status(100)["expired_count"] == 0


def test_repair_reoffers_stale_tasks_and_gives_a_task_to_a_run_without_one() -> None:
    stale = Run()  # its first workflow task has been ready for a minute, nobody took it
    stuck = Run()
    stuck.claim(T0 + 1)
    stuck.state.wt = None  # as if the task record were lost: running, no task, nothing to wait for
    engine = _engine({"stale": stale, "stuck": stuck}, T0 + 60)
    ops = SystemOps(engine)  # type: ignore[arg-type]
    cands = ops.repair_status()["candidates"]
    assert (cands["existing_task_candidates"], cands["missing_task_candidates"]) == (1, 1)
    out = trio.run(ops.repair_pass, None, None)
    assert out["repaired_existing_tasks"] == 1 and out["repaired_missing_tasks"] == 1 and out["dispatched_tasks"] == 2
    assert engine.actors["stale"].reoffered == 1
    assert stuck.state.wt is not None and stuck.state.wt.status == "ready"
    assert ops.repair_status()["candidates"]["missing_task_candidates"] == 0


def test_a_failing_run_is_reported_and_the_pass_goes_on() -> None:
    """The routes answer 207 when a pass reports failures; here one run's actor is unreachable."""
    good, bad = Run(), Run()
    engine = _engine({"good": good, "bad": bad}, T0 + 60)
    original = engine.ask

    async def ask(run_id: str, kind: str, **kw: Any) -> Any:
        if run_id == "bad":
            raise RuntimeError("the run's journal could not be loaded")
        return await original(run_id, kind, **kw)

    engine.ask = ask  # type: ignore[method-assign]
    out = trio.run(SystemOps(engine).repair_pass, None, None)  # type: ignore[arg-type]
    assert out["repaired_existing_tasks"] == 1
    assert [f["run_id"] for f in out["existing_task_failures"]] == ["bad"] and "journal" in out["existing_task_failures"][0]["error"]
