"""A commit rides out a short database outage, and an ambiguous first attempt is recognised."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import journal_retry
from persistence.journal import Batch, ConflictError, StoreUnavailable


class FlakyJournal:
    """Fails the first ``down`` appends; ``lands`` says whether a failed append still committed."""

    def __init__(self, down: int, lands: bool) -> None:
        self.down, self.lands = down, lands
        self.records: dict[str, list[bytes]] = {"r": [b"one"]}
        self.attempts = 0

    async def append(self, batch: Batch) -> None:
        self.attempts += 1
        await trio.sleep(0.01)
        for i, (run_id, jseq, _) in enumerate(batch.records):
            if jseq != len(self.records.setdefault(run_id, [])) + 1 + i:
                raise ConflictError(f"{run_id}@{jseq}")
        if self.attempts <= self.down and not self.lands:
            raise StoreUnavailable("connection refused")
        for run_id, _, body in batch.records:
            self.records[run_id].append(body)
        if self.attempts <= self.down:
            raise StoreUnavailable("connection lost after the commit was sent")

    async def read_records(self, run_id: str) -> list[bytes]:
        return list(self.records.get(run_id, []))


def _batch() -> Batch:
    return Batch(records=[("r", 2, b"two"), ("r", 3, b"three")])


@pytest.mark.parametrize("lands", [False, True], ids=["not-committed", "committed-but-unanswered"])
async def test_a_short_outage_is_ridden_out(autojump_clock: trio.testing.MockClock, lands: bool) -> None:
    journal = FlakyJournal(down=3, lands=lands)
    await journal_retry.append(journal, _batch(), "r")
    assert journal.records["r"] == [b"one", b"two", b"three"]  # exactly once either way


async def test_a_longer_outage_fails_within_the_budget(autojump_clock: trio.testing.MockClock) -> None:
    journal = FlakyJournal(down=10_000, lands=False)
    started = trio.current_time()
    with pytest.raises(StoreUnavailable):
        await journal_retry.append(journal, _batch(), "r")
    assert trio.current_time() - started <= journal_retry.APPEND_BUDGET + 1


async def test_a_real_conflict_is_not_mistaken_for_an_earlier_attempt(autojump_clock: trio.testing.MockClock) -> None:
    journal = FlakyJournal(down=0, lands=False)
    journal.records["r"].append(b"someone else's")
    with pytest.raises(ConflictError):
        await journal_retry.append(journal, _batch(), "r")
    journal = FlakyJournal(down=1, lands=False)
    journal.records["r"].append(b"someone else's")  # ambiguous first, then a position that is not ours
    with pytest.raises((ConflictError, StoreUnavailable)):
        await journal_retry.append(journal, _batch(), "r")
