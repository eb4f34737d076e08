"""The ``Clock`` seam: both clocks satisfy it, a MockClock drives ``TrioClock``, shard leases read it."""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

import actors.clock
import persistence.clock
from actors.clock import Clock, SystemClock, TrioClock, sleep_until
from persistence.pg_shard_leases import LeasesLostError, ShardLeases


class FixedClock:
    """A clock a test sets by hand: satisfies ``Clock`` structurally, with no base class."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


def test_every_clock_satisfies_the_protocol() -> None:
    for clock in (SystemClock(), TrioClock(), FixedClock(5.0)):
        assert isinstance(clock, Clock)
    assert not isinstance(object(), Clock)


def test_actors_clock_re_exports_the_persistence_clock() -> None:
    # One class, not a copy: code importing either name gets the same clock.
    assert actors.clock.SystemClock is persistence.clock.SystemClock
    assert actors.clock.Clock is persistence.clock.Clock


def test_system_clock_reads_wall_time() -> None:
    before = time.time()
    now = SystemClock().now()
    after = time.time()
    assert before <= now <= after


async def test_trio_clock_follows_a_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioClock(epoch=1_000.0)
    start = clock.now()
    assert start == pytest.approx(1_000.0 + autojump_clock.current_time())
    await trio.sleep(3600)  # an hour of clock time, none of wall time
    assert clock.now() - start == pytest.approx(3600, abs=1e-6)
    autojump_clock.jump(60)
    assert clock.now() - start == pytest.approx(3660, abs=1e-6)


async def test_sleep_until_wakes_at_the_clocks_deadline(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioClock()
    deadline = clock.now() + 90
    await sleep_until(clock, deadline)
    assert clock.now() == pytest.approx(deadline, abs=1e-6)
    before = clock.now()
    await sleep_until(clock, before - 30)  # a deadline already past returns at once
    assert clock.now() == before


def test_shard_leases_default_to_wall_time() -> None:
    assert isinstance(ShardLeases("postgresql://unused", "n").clock, SystemClock)


async def test_shard_leases_stamp_claims_and_releases_with_the_injected_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FixedClock(1_234.5)
    leases = ShardLeases("postgresql://unused", "n", clock=clock)
    sent: list[tuple[str, dict[str, object]]] = []

    async def answer(op: str, **args: object) -> object:  # stands in for the lease process
        sent.append((op, args))
        return 7 if op == "claim" else None

    monkeypatch.setattr(leases, "_call", answer)
    assert await leases.claim(3) == 7
    clock.at = 2_000.0
    await leases.release(3)
    assert sent == [("claim", {"shard": 3, "now": 1_234.5}), ("release", {"shard": 3, "epoch": 7, "now": 2_000.0})]


async def test_a_claim_answer_that_is_not_an_epoch_ends_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lock may have been taken without being recorded: the session must end (freeing it).
    leases = ShardLeases("postgresql://unused", "n", clock=FixedClock(0.0))

    async def answer(op: str, **args: object) -> object:
        return "seven"

    monkeypatch.setattr(leases, "_call", answer)
    with pytest.raises(LeasesLostError, match="not an epoch"):
        await leases.claim(3)
    assert leases.lost.is_set()
    assert leases.owned() == {}
