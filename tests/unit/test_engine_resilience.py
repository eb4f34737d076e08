"""A run whose journal cannot be folded fails alone: the node keeps serving every other run."""

from __future__ import annotations

import pytest
import trio

from actors import messages as m
from actors.clock import TrioClock
from actors.emit import new_run_meta, started_records
from actors.records import from_stored, to_stored
from actors.run_actor import NotOwner, RunUnavailable
from persistence import codec
from persistence.ids import run_ulid
from runtime.engine import Engine


class FakeJournal:
    def __init__(self) -> None:
        self.records: dict[str, list[bytes]] = {}
        self.poisoned: set[str] = set()

    async def read_records(self, run_id: str) -> list[bytes]:
        await trio.lowlevel.checkpoint()
        if run_id in self.poisoned:
            raise ValueError("corrupt record")
        return self.records.get(run_id, [])

    async def runs_to_recover(self) -> list:
        return []

    async def append(self, batch) -> None:  # noqa: ANN001 - the journal Batch
        for run_id, _jseq, body in batch.records:
            self.records.setdefault(run_id, []).append(body)


def _run(journal: FakeJournal, now: float) -> str:
    run_id = run_ulid(1, now)
    meta = new_run_meta(
        run_id=run_id, namespace="default", workflow_id=f"wf-{run_id}", workflow_type="t", task_queue="q",
        run_number=1, arguments=None, now=now, execution_timeout=None, run_timeout=None,
    )
    journal.records[run_id] = [codec.dumps(to_stored(r)) for r in started_records(meta, now, accepted=True)]
    return run_id


async def test_a_poisoned_run_is_quarantined_and_the_node_survives(autojump_clock: trio.testing.MockClock) -> None:
    journal = FakeJournal()
    clock = TrioClock()
    engine = Engine(journal, clock, idle_seconds=5)
    healthy = _run(journal, clock.now())
    poisoned = _run(journal, clock.now())
    journal.poisoned.add(poisoned)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with pytest.raises(RunUnavailable):
            await engine.ask(poisoned, m.Ping())
        with pytest.raises(RunUnavailable):  # quarantined: no reload storm
            await engine.ask(poisoned, m.Ping())
        assert await engine.ask(healthy, m.Ping()) is None  # everything else keeps working
        journal.poisoned.clear()
        await trio.sleep(11)  # after the quarantine the run is tried again
        assert await engine.ask(poisoned, m.Ping()) is None
        nursery.cancel_scope.cancel()


async def test_readers_of_a_run_that_fails_to_load_are_answered_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """Readers once waited on ``actor.loaded``, never set after a failed load: every later
    request (describe, terminate …) hung forever (issue 9, point 3)."""
    journal = FakeJournal()
    clock = TrioClock()
    engine = Engine(journal, clock, idle_seconds=5)
    poisoned = _run(journal, clock.now())
    journal.poisoned.add(poisoned)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with trio.fail_after(1):
            for _ in range(3):
                with pytest.raises(RunUnavailable):
                    await engine.ask(poisoned, m.Describe())
        nursery.cancel_scope.cancel()


def _deep(levels: int) -> object:
    value: object = "bottom"
    for _ in range(levels):
        value = {"x": value}
    return value


async def test_a_run_stored_deeper_than_the_decoder_default_still_loads(autojump_clock: trio.testing.MockClock) -> None:
    """Earlier versions stored a memo as deep as JSON allows (~990 levels); cbor2 reads 400 by default."""
    import cbor2

    journal = FakeJournal()
    clock = TrioClock()
    engine = Engine(journal, clock, idle_seconds=5)
    run_id = _run(journal, clock.now())
    started = from_stored(codec.loads(journal.records[run_id][-1]))
    started.payload["memo"] = _deep(450)
    journal.records[run_id][-1] = codec.dumps(to_stored(started))
    with pytest.raises(cbor2.CBORDecodeError):
        cbor2.loads(journal.records[run_id][-1])
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with trio.fail_after(1):
            view = await engine.ask(run_id, m.Describe())
        assert view.is_open and not engine.actors[run_id].damage
        nursery.cancel_scope.cancel()


async def test_a_run_with_an_unreadable_record_refuses_everything_but_terminate(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    from actors.run_actor import RunDamaged

    journal = FakeJournal()
    clock = TrioClock()
    engine = Engine(journal, clock, idle_seconds=5)
    run_id = _run(journal, clock.now())
    journal.records[run_id].append(b"\xff\xff not cbor")
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with trio.fail_after(1):
            with pytest.raises(RunDamaged):
                await engine.ask(run_id, m.Describe())
            with pytest.raises(RunDamaged):
                await engine.ask(run_id, m.Signal(name="s", arguments=None, command_id="c1"))
            with pytest.raises(RunDamaged):
                await engine.ask(run_id, m.Close(kind="cancel", reason=None))
            located = await engine.ask(run_id, m.Describe(allow_damaged=True))
            assert located.is_open
            answer = await engine.ask(run_id, m.Close(kind="terminate", reason="unreadable journal"))
        assert "sequence" in answer and (await engine.ask(run_id, m.Describe())).status == "terminated"
        assert journal.records[run_id][2] == b"\xff\xff not cbor"  # appended after it, nothing rewritten
        assert "WorkflowTerminated" in [from_stored(codec.loads(b)).kind for b in journal.records[run_id][3:]]
        assert "cannot be read" in caplog.text and run_id in caplog.text
        # closed now: it reads again (what could be read), also after passivation and reload
        await trio.sleep(10)
        assert run_id not in engine.actors
        assert (await engine.ask(run_id, m.Describe())).status == "terminated"
        assert engine.actors[run_id].damage
        nursery.cancel_scope.cancel()


class GatedJournal(FakeJournal):
    """Commits wait at a gate: a stop can catch the actor mid-commit."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.waiting = trio.Event()

    async def append(self, batch) -> None:  # noqa: ANN001 - the journal Batch
        self.waiting.set()
        await self.gate.wait()
        await super().append(batch)


async def test_callers_of_an_actor_stopped_mid_commit_are_told_not_owner_even_when_shielded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stopped actor (its shard moved) once left its callers waiting for ever; a poll's claim
    waits shielded, so the node could not even shut down (seen in the cluster loop)."""
    journal = GatedJournal()
    clock = TrioClock()
    engine = Engine(journal, clock, idle_seconds=5)
    run_id = _run(journal, clock.now())
    answers: dict[str, object] = {}

    async def ask(name: str, message: m.Message, shield: bool) -> None:
        try:
            with trio.CancelScope(shield=shield):  # as WorkerService._poll waits for a claim
                answers[name] = await engine.ask(run_id, message)
        except NotOwner as exc:
            answers[name] = exc

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        nursery.start_soon(ask, "in flight", m.Signal(name="a", arguments=None, command_id="c-1"), True)
        await journal.waiting.wait()
        nursery.start_soon(ask, "queued", m.Signal(name="b", arguments=None, command_id="c-2"), False)
        await trio.testing.wait_all_tasks_blocked()
        engine.actors[run_id].stop()
        journal.gate.set()  # the commit in flight ends (it is shielded: it runs to its end)
        with trio.fail_after(1):
            while len(answers) < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert isinstance(answers["queued"], NotOwner), answers
    assert not isinstance(answers["in flight"], BaseException), "the committed signal is answered as committed"
