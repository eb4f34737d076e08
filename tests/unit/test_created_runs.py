"""A run another run creates (a child, a continuation) is written by its own actor.

Invariant 1 of the architecture: only a run's actor appends to its journal, under the fence
of the run's own shard. The creating run records the start (with the new run's metadata) and
keeps re-sending it until the new run confirms, so a crash between the two loses nothing.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from actors import messages as m
from actors.clock import TrioClock
from actors.records import from_stored
from persistence import codec
from persistence.journal import InstanceRow
from runtime.engine import Engine
from runtime.workflows import WorkflowService
from tests.unit.test_engine_resilience import FakeJournal, _run

CHILD = {"type": "start_child_workflow", "workflow_type": "ship", "parent_close_policy": "abandon"}
CONTINUE = {"type": "continue_as_new"}


class BatchJournal(FakeJournal):
    """Keeps each appended batch's run ids and the instance rows, as a real journal would."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[set[str]] = []
        self.instances: dict[tuple[str, str], InstanceRow] = {}

    async def append(self, batch: Any) -> None:
        self.batches.append({run_id for run_id, _, _ in batch.records})
        for row in batch.instances:
            self.instances[(row.namespace, row.workflow_id)] = row
        await super().append(batch)

    async def get_instance(self, namespace: str, workflow_id: str) -> InstanceRow | None:
        return self.instances.get((namespace, workflow_id))

    async def get_run(self, run_id: str) -> None:
        return None


def _types(journal: FakeJournal, run_id: str) -> list[str]:
    return [from_stored(codec.loads(body)).kind for body in journal.records.get(run_id, [])]


async def _complete_first_task(engine: Engine, run_id: str, commands: list[dict[str, Any]]) -> dict[str, Any]:
    await engine.ask(run_id, m.Tick())
    [view] = [v for v in engine.work_views() if v.run_id == run_id]
    assert view.workflow_task is not None
    task_id = view.workflow_task.task_id
    task = await engine.ask(run_id, m.ClaimWorkflowTask(task_id=task_id, owner="wf"))
    return await engine.ask(
        run_id, m.CompleteWorkflowTask(task_id=task_id, owner="wf", attempt=task["workflow_task_attempt"], commands=commands)
    )


async def test_a_child_is_written_by_its_own_actor_and_confirmed_to_the_parent(autojump_clock: trio.testing.MockClock) -> None:
    journal = BatchJournal()
    engine = Engine(journal, TrioClock(), idle_seconds=600)
    parent = _run(journal, TrioClock().now())
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        answer = await _complete_first_task(engine, parent, [CHILD])
        child = next(t for t in answer["created_task_ids"] if "-" not in t)
        await trio.testing.wait_all_tasks_blocked()
        assert _types(journal, child) == ["WorkflowStarted"]
        assert all(len(runs) == 1 for runs in journal.batches)  # no batch writes two runs
        assert "run_started" in _types(journal, parent)
        view = await engine.ask(child, m.Describe())
        assert view.is_open and journal.instances[("default", view.workflow_id)].current_run_id == child
        nursery.cancel_scope.cancel()


async def test_a_child_whose_start_was_lost_in_a_crash_is_started_when_the_parent_loads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = BatchJournal()
    parent = _run(journal, TrioClock().now())
    crashed = Engine(journal, TrioClock(), idle_seconds=600)
    crashed.start_run = lambda *args: None  # type: ignore[method-assign]  # the node dies right after the commit
    async with trio.open_nursery() as nursery:
        await nursery.start(crashed.run)
        answer = await _complete_first_task(crashed, parent, [CHILD])
        nursery.cancel_scope.cancel()
    child = next(t for t in answer["created_task_ids"] if "-" not in t)
    assert _types(journal, child) == [] and "run_started" not in _types(journal, parent)

    restarted = Engine(journal, TrioClock(), idle_seconds=600)
    async with trio.open_nursery() as nursery:
        await nursery.start(restarted.run)
        await restarted.ask(parent, m.Ping())  # loading the parent re-sends the unconfirmed start
        await trio.testing.wait_all_tasks_blocked()
        assert _types(journal, child) == ["WorkflowStarted"]
        assert _types(journal, parent).count("run_started") == 1
        await restarted.ask(parent, m.RunsStarted(run_ids=(child,)))  # a repeated confirmation writes nothing
        assert _types(journal, parent).count("run_started") == 1
        nursery.cancel_scope.cancel()


async def test_a_lost_continuation_is_started_by_the_reader_that_follows_the_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = BatchJournal()
    first = _run(journal, TrioClock().now())
    records = [from_stored(codec.loads(b)) for b in journal.records[first]]
    [meta] = [record.extra["meta"] for record in records if "meta" in record.extra]
    journal.instances[("default", meta["workflow_id"])] = InstanceRow("default", meta["workflow_id"], "t", first, 1, 0.0)
    crashed = Engine(journal, TrioClock(), idle_seconds=600)
    crashed.start_run = lambda *args: None  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(crashed.run)
        await _complete_first_task(crashed, first, [CONTINUE])
        nursery.cancel_scope.cancel()

    restarted = Engine(journal, TrioClock(), idle_seconds=600)
    restarted.start_run = lambda *args: None  # type: ignore[method-assign]  # only the reader can start it
    async with trio.open_nursery() as nursery:
        await nursery.start(restarted.run)
        view = await WorkflowService(restarted).current("default", meta["workflow_id"])
        assert view.run_id != first and view.run_number == 2 and view.is_open
        assert journal.instances[("default", meta["workflow_id"])].current_run_id == view.run_id
        await trio.testing.wait_all_tasks_blocked()
        assert "run_started" in _types(journal, first)
        nursery.cancel_scope.cancel()


class CountingJournal(BatchJournal):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def read_records(self, run_id: str) -> list[bytes]:
        self.reads.append(run_id)
        return await super().read_records(run_id)

    async def find_instances(self, workflow_id: str) -> list[InstanceRow]:
        return [row for (_, wid), row in self.instances.items() if wid == workflow_id]


async def test_a_client_start_reads_no_journal_and_its_run_is_served_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """A client's start mints the run id, so the run's actor begins empty: the start's path has
    one write and no read (a read of a journal that cannot exist cost a thread hop per start)."""
    journal = CountingJournal()
    engine = Engine(journal, TrioClock(), idle_seconds=600)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        started = await WorkflowService(engine).start("default", {"workflow_id": "fresh-1", "workflow_type": "t"})
        assert started.outcome == "started_new"
        assert journal.reads == []
        assert _types(journal, started.run.run_id) == ["StartAccepted", "WorkflowStarted"]
        assert [v.workflow_task for v in engine.work_views() if v.run_id == started.run.run_id][0] is not None
        again = await WorkflowService(engine).start("default", {"workflow_id": "fresh-1", "workflow_type": "t"})
        assert again.outcome == "rejected_duplicate" and again.run.run_id == started.run.run_id
        nursery.cancel_scope.cancel()


class GatedJournal(FakeJournal):
    """Holds every append until the test opens the gate, as a slow disk would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.waiting = trio.Event()

    async def append(self, batch: Any) -> None:
        self.waiting.set()
        await self.gate.wait()
        await super().append(batch)


async def test_a_read_is_answered_between_commits_never_during_one(autojump_clock: trio.testing.MockClock) -> None:
    """Reads skip the mailbox only while nothing uncommitted is in the actor's state: during a
    commit in flight a describe waits for it, then sees the committed signal."""
    journal = GatedJournal()
    journal.gate.set()
    engine = Engine(journal, TrioClock(), idle_seconds=600)
    run_id = _run(journal, TrioClock().now())
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        before = await engine.ask(run_id, m.Describe())  # loaded, no commit: answered at once
        assert before.visible == 2
        journal.gate = trio.Event()
        journal.waiting = trio.Event()
        nursery.start_soon(engine.ask, run_id, m.Signal(name="go", arguments=None, command_id="c1"))
        await journal.waiting.wait()  # the signal's commit is in flight
        seen: list[Any] = []

        async def describe() -> None:
            seen.append(await engine.ask(run_id, m.Describe()))

        nursery.start_soon(describe)
        try:
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []  # not answered from the folded, uncommitted state
        finally:
            journal.gate.set()  # the commit is shielded: let it end whatever the assertion said
        await trio.testing.wait_all_tasks_blocked()
        assert [view.visible for view in seen] == [3]  # the committed signal, once the commit is in
        nursery.cancel_scope.cancel()
