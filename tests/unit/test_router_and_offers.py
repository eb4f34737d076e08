"""The router's failover and the offer book, with a fake directory and fake members (no sockets)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors.task_queue import Offer, TaskQueue
from persistence.ids import run_ulid
from runtime.offers import OfferBook
from runtime.peers import UNREACHABLE_AFTER, PeerError
from runtime.router import OWNER_BUDGET, Router, Unreachable


class FakePeers:
    """The directory and the members: who owns what, who answers, and what each call does."""

    def __init__(self) -> None:
        self.owners: dict[int, str] = {}
        self.urls = {"a": "http://a", "b": "http://b"}
        self.failures: dict[str, int] = {}
        self.version = 0
        self.behaviour: dict[str, str] = {}  # url -> "ok" | "hang" | "error"
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def owner_url(self, shard: int) -> str | None:
        owner = self.owners.get(shard)
        url = self.urls.get(owner) if owner else None
        return url if url is not None and self.failures.get(url, 0) < UNREACHABLE_AFTER else None

    def suspect(self, url: str) -> None:
        self.failures[url] = self.failures.get(url, 0) + 1

    async def call(self, url: str, op: str, **args: Any) -> Any:
        self.calls.append((url, op, args))
        mode = self.behaviour.get(url, "ok")
        if mode == "hang":
            await trio.sleep_forever()
        if mode == "error":
            raise PeerError("refused")
        return {"from": url, "refused": 0}


class FakeEngine:
    def __init__(self, owned: set[int] | None) -> None:
        self.owned = None if owned is None else dict.fromkeys(owned, 1)
        self.peers = FakePeers()
        self.queues: dict[tuple[str, str, str], TaskQueue] = {}

    def queue_home(self, kind: str, namespace: str, name: str) -> int:
        return {"local-q": 0, "remote-q": 1}[name]

    def queue(self, kind: str, namespace: str, name: str) -> TaskQueue:
        return self.queues.setdefault((kind, namespace, name), TaskQueue())


async def test_a_call_gives_up_on_a_member_that_does_not_answer_and_follows_the_new_owner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine({0})
    router = Router(engine)
    engine.peers.owners = {1: "a"}
    engine.peers.behaviour["http://a"] = "hang"  # frozen: accepts, never answers
    started = trio.current_time()

    async def move_after_a_while() -> None:
        await trio.sleep(4)  # its lease ends; the directory names b
        engine.peers.owners = {1: "b"}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(move_after_a_while)
        answer = await router.call(1, "claim", run_id="r")
    assert answer["from"] == "http://b"
    assert [c[0] for c in engine.peers.calls] == ["http://a", "http://a", "http://b"] or engine.peers.calls[-1][0] == "http://b"
    assert trio.current_time() - started < 6


async def test_a_call_with_no_reachable_owner_fails_within_the_budget(autojump_clock: trio.testing.MockClock) -> None:
    engine = FakeEngine({0})
    router = Router(engine)
    started = trio.current_time()
    with pytest.raises(Unreachable):
        await router.call(1, "post", run_id="r")
    assert OWNER_BUDGET <= trio.current_time() - started < OWNER_BUDGET + 1


async def test_a_call_that_must_not_repeat_is_sent_once(autojump_clock: trio.testing.MockClock) -> None:
    engine = FakeEngine({0})
    router = Router(engine)
    engine.peers.owners = {1: "a"}
    engine.peers.behaviour["http://a"] = "error"
    with pytest.raises(Unreachable):
        await router.call(1, "query_submit", retry=False)
    assert len(engine.peers.calls) == 1


async def test_a_forwarded_request_is_re_routed_when_its_owner_stops_answering(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine({0})
    router = Router(engine)
    engine.peers.owners = {1: "a"}
    sent: list[str] = []
    rerouted: list[bool] = []

    async def send(url: str, again: bool) -> httpx.Response:
        sent.append(url)
        rerouted.append(again)
        if url == "http://a":
            await trio.sleep_forever()  # a long poll parked on a node that then froze
        return httpx.Response(200, text=url)

    async def freeze_a() -> None:
        await trio.sleep(10)  # the poll was held this long, then the probes stop getting answers
        engine.peers.failures["http://a"] = UNREACHABLE_AFTER
        await trio.sleep(3)
        engine.peers.owners = {1: "b"}  # and later the shard moves

    async with trio.open_nursery() as nursery:
        nursery.start_soon(freeze_a)
        answer = await router.forward(1, send)
    assert answer is not None and answer.text == "http://b" and sent == ["http://a", "http://b"]
    assert rerouted == [False, True], "the second owner is told the first may have acted on the request"


async def test_a_forward_for_a_shard_that_becomes_local_is_handled_here(autojump_clock: trio.testing.MockClock) -> None:
    engine = FakeEngine({0})
    router = Router(engine)

    async def adopt() -> None:
        await trio.sleep(1)
        assert engine.owned is not None
        engine.owned[1] = 2

    async def never(url: str, rerouted: bool) -> httpx.Response:
        raise AssertionError("nothing to forward to")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(adopt)
        assert await router.forward(1, never) is None


def _offer(n: int, queue: str) -> tuple[str, str, str, Offer]:
    run_id = run_ulid(n % 4, 1_800_000_000.0 + n)
    return ("workflow", "default", queue, Offer(run_id, f"{run_id}-wt{n}", "t"))


async def test_the_offer_book_sends_new_tasks_withdraws_gone_ones_and_resends_after_a_move(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine({0})
    router = Router(engine)
    book = OfferBook(engine, router)
    local, remote = _offer(1, "local-q"), _offer(2, "remote-q")
    async with trio.open_nursery() as nursery:
        await nursery.start(book.run)
        engine.peers.owners = {1: "a"}
        book.publish("run-1", {local[3].task_id: local})
        book.publish("run-2", {remote[3].task_id: remote})
        await trio.sleep(0.1)
        assert list(engine.queue("workflow", "default", "local-q").backlog) == [local[3].task_id]
        assert [(url, op) for url, op, _ in engine.peers.calls] == [("http://a", "offers")]
        # the home of remote-q moves to b (a restart, a rebalance): b receives it without any new event
        engine.peers.owners = {1: "b"}
        engine.peers.version += 1
        await trio.sleep(1)
        assert engine.peers.calls[-1][0] == "http://b"
        assert engine.peers.calls[-1][2]["offers"][0]["task_id"] == remote[3].task_id
        # claimed: the local offer is withdrawn, and nothing of run-1 is sent again
        book.publish("run-1", {})
        assert not engine.queue("workflow", "default", "local-q").backlog
        calls = len(engine.peers.calls)
        await trio.sleep(11)  # the periodic resend still sends what is ready, only that
        assert len(engine.peers.calls) > calls
        assert all(o["task_id"] == remote[3].task_id for _, _, a in engine.peers.calls[calls:] for o in a["offers"])
        nursery.cancel_scope.cancel()


async def test_an_unreachable_home_gets_the_offers_when_it_answers_again(autojump_clock: trio.testing.MockClock) -> None:
    engine = FakeEngine({0})
    book = OfferBook(engine, Router(engine))
    remote = _offer(3, "remote-q")
    engine.peers.owners = {1: "a"}
    engine.peers.failures["http://a"] = UNREACHABLE_AFTER
    async with trio.open_nursery() as nursery:
        await nursery.start(book.run)
        book.publish(remote[3].run_id, {remote[3].task_id: remote})
        await trio.sleep(1)
        assert engine.peers.calls == []  # nowhere to send it
        engine.peers.failures["http://a"] = 0
        engine.peers.version += 1
        await trio.sleep(1)
        assert engine.peers.calls and engine.peers.calls[0][0] == "http://a"
        book.forget_shards({0, 1, 2, 3})  # its shard moved away: not ours to offer any more
        assert book.ready == {}
        nursery.cancel_scope.cancel()
