"""Node-to-node traffic at the edge of one node: ``/internal/rpc`` and forwarded client requests.

``/internal/rpc`` runs only calls a member signed with the cluster secret for *this* node and
start, once (api/internal_routes.py, runtime/peers.py, runtime/signing.py): unsigned, forged,
mis-addressed, altered, stale and replayed calls are refused with 401 and have no effect.
Forwarding (api/endpoints.py ``_handle``, runtime/router.py): a client's request for a shard owned
elsewhere is forwarded once; a request a member forwarded is never forwarded again (one hop),
and when no owner is reachable the answer is 503 with Retry-After after the grace, not before.

In-process node on SQLite; the cluster around it is simulated: ``engine.peers`` is a real
``Peers`` with a directory set by hand, ``engine.owned`` plays the shard manager, and the
other member's side of a forward is a recording stand-in for ``Peers.forward``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
import trio

from actors.clock import SystemClock
from runtime.node import Node
from runtime.peers import FORWARDED_HEADER, RPC_PATH, SIGNATURE_HEADER, TIMESTAMP_HEADER, Peers, audience
from runtime.signing import WINDOW_SECONDS
from tests.unit.inprocess import CP, node_app

SECRET = b"cluster-secret"
HERE = "http://here.invalid"  # this node's address as the other member knows it
OTHER = "http://other.invalid"
GRACE = 1.0  # OWNER_BUDGET, shortened for the test


class Clock:
    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return SystemClock().now() + self.offset


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[tuple[Node, Any]]:
    """This node, as a cluster member that knows the secret."""
    async with node_app(tmp_path) as (node, http):
        node.engine.peers = Peers(node.cfg.node_id, SECRET, node.clock, node.started_at)
        try:
            yield node, http
        finally:
            await node.engine.peers.aclose()


def sender(node: Node, *, secret: bytes = SECRET, started_at: float | None = None, node_id: str | None = None,
           clock: Any = None) -> Peers:
    """The other member, addressing this node (``node_id``/``started_at`` override whom it thinks it calls)."""
    peers = Peers("other", secret, clock or SystemClock(), 1.0)
    peers.audiences = {HERE: audience(node_id or node.cfg.node_id, node.started_at if started_at is None else started_at)}
    return peers


def offer_call(queue: str) -> bytes:
    return cbor2.dumps({"op": "offers", "offers": [
        {"kind": "workflow", "namespace": "default", "queue": queue, "run_id": "r-1", "task_id": "t-1", "type_name": "t", "seq": 1},
    ]})


async def rpc(http: Any, body: bytes, headers: dict[str, str]) -> Any:
    # members state the length (the test client would not): a call without it is refused unread
    return await http.post(
        RPC_PATH, data=body, headers={"Content-Type": "application/cbor", "Content-Length": str(len(body)), **headers}
    )


# --- /internal/rpc -----------------------------------------------------------------------


async def test_a_call_signed_by_a_member_for_this_node_runs_once(member: tuple[Node, Any]) -> None:
    node, http = member
    body = offer_call("q-ok")
    headers = sender(node).signed_headers("POST", RPC_PATH, body, HERE)
    r = await rpc(http, body, headers)
    assert r.status_code == 200, await r.get_data()
    assert cbor2.loads(await r.get_data()) == {"accepted": 1, "refused": 0}
    assert ("workflow", "default", "q-ok") in node.engine.queues

    again = await rpc(http, body, headers)  # the same call delivered a second time
    assert again.status_code == 401 and b"replay" in await again.get_data()


async def test_an_unsigned_call_is_refused_unread(member: tuple[Node, Any]) -> None:
    node, http = member
    r = await rpc(http, offer_call("q-unsigned"), {})
    assert r.status_code == 401 and (await r.get_data()).startswith(b"refused:")
    assert r.headers.get("Connection") == "close"
    assert ("workflow", "default", "q-unsigned") not in node.engine.queues


@pytest.mark.parametrize(
    "forgery",
    ["wrong secret", "another node", "an earlier start", "altered body", "altered signature", "stale timestamp",
     "bare forwarded header"],
)
async def test_a_forged_call_is_refused_and_has_no_effect(member: tuple[Node, Any], forgery: str) -> None:
    node, http = member
    queue = "q-" + forgery.replace(" ", "-")
    body = offer_call(queue)
    if forgery == "wrong secret":
        headers = sender(node, secret=b"guessed").signed_headers("POST", RPC_PATH, body, HERE)
    elif forgery == "another node":
        headers = sender(node, node_id="someone-else").signed_headers("POST", RPC_PATH, body, HERE)
    elif forgery == "an earlier start":
        headers = sender(node, started_at=node.started_at - 60).signed_headers("POST", RPC_PATH, body, HERE)
    elif forgery == "altered body":
        headers = sender(node).signed_headers("POST", RPC_PATH, body, HERE)
        body = offer_call(queue + "-x")
        queue += "-x"
    elif forgery == "altered signature":
        headers = sender(node).signed_headers("POST", RPC_PATH, body, HERE)
        sig = headers[SIGNATURE_HEADER]
        headers[SIGNATURE_HEADER] = ("0" if sig[0] != "0" else "1") + sig[1:]
    elif forgery == "stale timestamp":
        headers = sender(node, clock=Clock(-WINDOW_SECONDS - 5)).signed_headers("POST", RPC_PATH, body, HERE)
    else:
        headers = {FORWARDED_HEADER: "other"}
    r = await rpc(http, body, headers)
    assert r.status_code == 401, (forgery, r.status_code, await r.get_data())
    assert (await r.get_data()).startswith(b"refused:")
    assert ("workflow", "default", queue) not in node.engine.queues


async def test_a_node_outside_a_cluster_has_no_rpc(tmp_path: Path) -> None:
    async with node_app(tmp_path) as (_node, http):
        r = await rpc(http, offer_call("q"), {TIMESTAMP_HEADER: "1"})
        assert r.status_code == 404


# --- forwarding ----------------------------------------------------------------------------


@pytest.fixture
async def not_owner(member: tuple[Node, Any], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Node, Any, list[str]]]:
    """This node owns no shard; "other" at OTHER owns them all. Forwards are recorded, and answered 201."""
    node, http = member
    monkeypatch.setattr("api.endpoints.OWNER_BUDGET", GRACE)
    node.engine.owned = {}
    peers = node.engine.peers
    peers.set_directory([type("Row", (), {"node_id": "other", "advertise_url": OTHER, "started_at": 1.0})()])
    peers.owners = dict.fromkeys(range(node.engine.shard_count), "other")
    forwarded: list[str] = []

    async def forward(
        url: str, method: str, path: str, headers: dict[str, str], body: bytes, rerouted: bool = False
    ) -> httpx.Response:
        forwarded.append(f"{method} {url}{path}")
        return httpx.Response(201, json={"answered_by": "other"})

    monkeypatch.setattr(peers, "forward", forward)
    yield node, http, forwarded


START = json.dumps({"workflow_type": "t", "workflow_id": "elsewhere", "task_queue": "q"}).encode()


async def test_a_client_request_for_another_members_shard_is_forwarded_once(
    not_owner: tuple[Node, Any, list[str]],
) -> None:
    _node, http, forwarded = not_owner
    r = await http.post("/api/workflows", data=START, headers={**CP, "Content-Type": "application/json"})
    assert r.status_code == 201 and await r.get_json() == {"answered_by": "other"}
    assert forwarded == [f"POST {OTHER}/api/workflows"]


async def test_a_bare_forwarded_header_from_a_client_does_not_stop_the_forward(
    not_owner: tuple[Node, Any, list[str]],
) -> None:
    _node, http, forwarded = not_owner
    r = await http.post("/api/workflows", data=START, headers={**CP, "Content-Type": "application/json", FORWARDED_HEADER: "other"})
    assert r.status_code == 201 and forwarded == [f"POST {OTHER}/api/workflows"]


async def test_a_request_a_member_forwarded_is_not_forwarded_again(not_owner: tuple[Node, Any, list[str]]) -> None:
    node, http, forwarded = not_owner
    headers = sender(node).signed_headers("POST", "/api/workflows", START, HERE)
    started = trio.current_time()
    r = await http.post("/api/workflows", data=START, headers={**CP, "Content-Type": "application/json", **headers})
    waited = trio.current_time() - started
    assert forwarded == []  # one hop: it waits for the shard to become this node's, then gives up
    assert r.status_code == 503, await r.get_data()
    assert (await r.get_json())["reason"] == "shard_not_owned"
    assert r.headers.get("Retry-After")
    assert GRACE - 0.05 <= waited < GRACE + 5


async def test_with_no_reachable_owner_the_answer_is_503_with_retry_after_after_the_grace(
    not_owner: tuple[Node, Any, list[str]],
) -> None:
    node, http, forwarded = not_owner
    for _ in range(3):  # the owner stops answering its probes
        node.engine.peers.suspect(OTHER)
    started = trio.current_time()
    r = await http.post("/api/workflows", data=START, headers={**CP, "Content-Type": "application/json"})
    waited = trio.current_time() - started
    assert forwarded == []
    assert r.status_code == 503, await r.get_data()
    assert (await r.get_json())["reason"] == "shard_not_owned"
    assert int(r.headers["Retry-After"]) >= 1
    assert GRACE - 0.05 <= waited < GRACE + 5


def test_every_kind_a_member_may_post_to_a_run_can_be_read_back_from_the_wire() -> None:
    """A kind another node posts must decode there: a missing one was a 500 on the node call and
    a child's cancellation request or a parent's policy outcome that never arrived."""
    from actors import messages as m

    samples = {
        "tick": m.Tick(), "check_children": m.CheckChildren(), "child_closed": m.ChildClosed(child_run_id="r"),
        "close": m.Close(kind="terminate", reason="x"), "runs_started": m.RunsStarted(run_ids=["r"]),
        "parent_close_done": m.ParentCloseDone(child_run_id="r", outcome="applied"),
        "child_request_done": m.ChildRequestDone(child_run_id="r", outcome="applied"),
        "request_cancellation": m.RequestCancellation(request_id="q", parent={"run_id": "p", "workflow_id": "w"}),
    }
    assert set(samples) == set(m.POSTABLE)
    for kind, message in samples.items():
        wire_kind, args = m.to_wire(message)
        assert wire_kind == kind and m.from_wire(*cbor2.loads(cbor2.dumps([wire_kind, args]))) == message
    with pytest.raises(m.BadMessage):
        m.from_wire("describe", {})
