"""Riding out a short database outage (a PostgreSQL restart takes a few seconds).

The SDK retries a failed request three times within half a second, so a commit that fails
while the database restarts would cost a worker its completion (the activity then waits for
its lease to expire). Instead, the actor retries for up to ``APPEND_BUDGET`` seconds.

A failed attempt's outcome is unknown — the commit may have reached the database before the
connection broke. Retrying the same batch is still safe: its positions are unique, so either
it commits now, or it conflicts because the earlier attempt did commit — which the journal
shows (our bodies at our positions), and that is the same success.
"""

from __future__ import annotations

import trio

from persistence.journal import Batch, ConflictError, Journal, StoreUnavailable

APPEND_BUDGET = 8.0  # seconds; well inside the SDK's 60 s request timeout
READ_BUDGET = 5.0


async def append(journal: Journal, batch: Batch, run_id: str, budget: float = APPEND_BUDGET) -> None:
    deadline = trio.current_time() + budget
    delay, ambiguous = 0.1, False
    while True:
        try:
            await journal.append(batch)
            return
        except StoreUnavailable:
            if trio.current_time() + delay > deadline:
                raise
            ambiguous = True
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)
        except ConflictError:
            if not ambiguous or not await _already_committed(journal, batch, run_id):
                raise
            return


async def _already_committed(journal: Journal, batch: Batch, run_id: str) -> bool:
    ours = [(jseq, body) for rid, jseq, body in batch.records if rid == run_id]
    if not ours:
        return False
    stored = await journal.read_records(run_id)
    return all(jseq <= len(stored) and stored[jseq - 1] == body for jseq, body in ours)


async def read_records(journal: Journal, run_id: str, budget: float = READ_BUDGET) -> list[bytes]:
    deadline = trio.current_time() + budget
    delay = 0.1
    while True:
        try:
            records: list[bytes] = await journal.read_records(run_id)
            return records
        except StoreUnavailable:
            if trio.current_time() + delay > deadline:
                raise
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)
