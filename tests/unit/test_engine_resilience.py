"""A run whose journal cannot be folded fails alone: the node keeps serving every other run."""

from __future__ import annotations

import pytest
import trio

from actors.clock import TrioClock
from actors.emit import new_run_meta, started_records
from actors.run_actor import RunUnavailable
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
    journal.records[run_id] = [codec.dumps(r) for r in started_records(meta, now, accepted=True)]
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
            await engine.ask(poisoned, "ping")
        with pytest.raises(RunUnavailable):  # quarantined: no reload storm
            await engine.ask(poisoned, "ping")
        assert await engine.ask(healthy, "ping") is None  # everything else keeps working
        journal.poisoned.clear()
        await trio.sleep(11)  # after the quarantine the run is tried again
        assert await engine.ask(poisoned, "ping") is None
        nursery.cancel_scope.cancel()
