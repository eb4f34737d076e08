"""Sticky execution (extended spec §12.2): a run's next workflow task goes to the worker that
cached its history first, and to anyone once that worker has had its chance.

The task queue is driven on trio's MockClock (time jumps when every task is blocked), so the
dispatch window is tested as time, not slept through. The decisions (affinity set and cleared,
the replay mode stamped by the claim) are plain functions on a hand-built run.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from actors import decide_workflow_task as dwt
from actors.task_queue import STICKY_WINDOW, Offer, TaskQueue
from tests.unit.test_fold_and_decide import T0, WF_OWNER, Run, activity

WALL = 1_000.0  # the wall clock the offers' sticky_until is read on (fixed: only trio time moves)


def _queue() -> TaskQueue:
    return TaskQueue(wall=lambda: WALL)


def _sticky(task: str, worker: str = "w-sticky", until: float = WALL + 300) -> Offer:
    return Offer("run-1", task, "t", sticky=worker, sticky_until=until)


async def _poll(q: TaskQueue, worker: str, timeout: float, got: dict[str, Any]) -> None:
    started = trio.current_time()
    offer = await q.take(lambda name: True, timeout, trio.Event(), worker)
    got[worker] = (offer.task_id if offer else None, trio.current_time() - started)


async def test_a_sticky_task_goes_to_its_workers_parked_poll_not_the_first_one(autojump_clock: trio.testing.MockClock) -> None:
    q, got = _queue(), {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_poll, q, "w-other", 30, got)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_poll, q, "w-sticky", 30, got)
        await trio.testing.wait_all_tasks_blocked()
        q.offer(_sticky("wt-1"))
        await trio.testing.wait_all_tasks_blocked()
        q.offer(Offer("run-2", "wt-2", "t"))  # an ordinary task for the other poll
    assert got == {"w-sticky": ("wt-1", 0), "w-other": ("wt-2", 0)}


async def test_a_sticky_task_waits_the_dispatch_window_for_its_worker_then_anyone_takes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q, got = _queue(), {}
    q.offer(_sticky("wt-1"))  # its worker is busy: nobody is parked for it
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_poll, q, "w-other", 30, got)
    task, waited = got["w-other"]
    assert task == "wt-1"
    assert waited == STICKY_WINDOW, "held for its worker exactly the window, then handed over without a new offer"


async def test_the_sticky_worker_takes_its_task_from_the_backlog_before_older_ones(autojump_clock: trio.testing.MockClock) -> None:
    q, got = _queue(), {}
    q.offer(Offer("run-2", "wt-older", "t"))
    q.offer(_sticky("wt-mine"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_poll, q, "w-sticky", 30, got)
    assert got["w-sticky"] == ("wt-mine", 0)


async def test_an_affinity_that_ends_sooner_than_the_window_holds_only_until_it_ends(autojump_clock: trio.testing.MockClock) -> None:
    q, got = _queue(), {}
    q.offer(_sticky("wt-1", until=WALL + 1.5))
    q.offer(_sticky("wt-2", until=WALL - 1))  # already over: anyone's at once
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_poll, q, "w-other", 30, got)
    assert got["w-other"] == ("wt-2", 0)
    got.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_poll, q, "w-other", 30, got)
    assert got["w-other"] == ("wt-1", 1.5)


async def test_a_deregistered_sticky_worker_releases_its_held_tasks_at_once(autojump_clock: trio.testing.MockClock) -> None:
    q, got = _queue(), {}
    q.offer(_sticky("wt-1"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_poll, q, "w-other", 30, got)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1)
        q.release_worker("w-sticky")
    assert got["w-other"] == ("wt-1", 1)
    assert not q.backlog and not q.held and not q.sticky_backlog


# --- the affinity in the run's state and the claim's replay mode ---------------------------


def _sticky_claim(run: Run, ttl: int = 300, **change: Any) -> dict[str, Any]:
    return {"worker_id": WF_OWNER, "workflow_id": run.state.meta["workflow_id"], "run_id": run.state.run_id, "ttl": ttl, **change}


def test_a_completion_with_a_sticky_cache_sets_the_affinity_and_the_next_claim_expects_a_hit() -> None:
    run = Run()
    wt = run.claim(T0 + 1)
    assert wt.sticky_mode is None, "no affinity yet: a cold claim has no mode"
    run.commit(dwt.complete(run.state, wt.task_id, [activity()], T0 + 1, sticky=_sticky_claim(run, ttl=60)))
    assert run.state.sticky == (WF_OWNER, T0 + 61)
    run.act_claim(1, T0 + 2)
    run.act_complete(1, T0 + 3)
    assert run.claim(T0 + 4).sticky_mode == "sticky_hit_expected"


def test_another_worker_or_an_expired_affinity_gets_a_forced_cold_replay() -> None:
    for owner, at in (("someone-else", T0 + 4), (WF_OWNER, T0 + 100)):
        run = Run()
        wt = run.claim(T0 + 1)
        run.commit(dwt.complete(run.state, wt.task_id, [activity()], T0 + 1, sticky=_sticky_claim(run, ttl=60)))
        run.act_claim(1, T0 + 2)
        run.act_complete(1, T0 + 3)
        assert run.claim(at, owner=owner).sticky_mode == "forced_cold_replay", (owner, at)


def test_a_claim_for_another_worker_or_run_sets_no_affinity() -> None:
    for change in ({"worker_id": "not-the-lease-owner"}, {"run_id": "another-run"}, {"workflow_id": "another-workflow"}):
        run = Run()
        wt = run.claim(T0 + 1)
        run.commit(dwt.complete(run.state, wt.task_id, [activity()], T0 + 1, sticky=_sticky_claim(run, **change)))
        assert run.state.sticky is None, change


def test_a_completion_without_it_or_a_failure_clears_the_affinity_and_waiting_for_history_keeps_it() -> None:
    run = Run()
    wt = run.claim(T0 + 1)
    run.commit(dwt.complete(run.state, wt.task_id, [activity("a"), activity("b")], T0 + 1, sticky=_sticky_claim(run)))
    for seq in (1, 2):
        run.act_claim(seq, T0 + 2)
    run.act_complete(1, T0 + 3)
    run.claim(T0 + 3)
    outcome, _ = run.fail_task({"type": "WorkflowTaskWaitingForHistory", "message": "wait"}, T0 + 3)
    assert outcome == "completed" and run.state.sticky is not None, "the no-op failure leaves it"
    run.act_complete(2, T0 + 4)
    run.claim(T0 + 5)
    run.fail_task({"type": "Boom", "message": "replay failed"}, T0 + 5)
    assert run.state.sticky is None, "a failed replay starts the next one cold"
    wt = run.claim(T0 + 7)
    assert wt.sticky_mode is None
    run.commit(dwt.complete(run.state, wt.task_id, [activity("c")], T0 + 7, sticky=_sticky_claim(run)))
    assert run.state.sticky is not None
    run.act_claim(3, T0 + 8)
    run.act_complete(3, T0 + 8)
    wt = run.claim(T0 + 9)
    run.commit(dwt.complete(run.state, wt.task_id, [activity("d")], T0 + 9))
    assert run.state.sticky is None, "a completion without a sticky_cache clears it"


def test_a_closing_completion_sets_no_affinity() -> None:
    run = Run()
    wt = run.claim(T0 + 1)
    run.commit(dwt.complete(run.state, wt.task_id, [{"type": "complete_workflow", "result": None}], T0 + 1,
                            sticky=_sticky_claim(run)))
    assert run.state.sticky is None
