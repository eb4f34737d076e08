"""A poll re-sent after the queue's home was lost gets what that home already leased to it.

The cluster failure this guards against: a poll forwarded to its task queue's home; the home
claims a task (the lease commits on the run's owner) and dies before its answer gets back; the
forwarding member re-sends the same poll (same ``poll_request_id``) to the new home, which
remembers nothing. Without recovery the task stays leased to a worker that never got it until
the lease expires (60 s for a workflow task, the start-to-close timeout for an activity).

In-process node on SQLite: the lost home's memory is dropped by hand (``workers._polls``), the
re-send arrives as a member's signed forward marked ``X-DW-Rerouted``, and the other member's
side of ``/internal/rpc`` is played by signed calls (runtime/poll_recovery.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from actors import messages as m
from runtime.node import Node
from runtime.peers import REROUTED_HEADER, RPC_PATH, Peers
from tests.unit.inprocess import CP, node_app
from tests.unit.test_rpc_and_forwarding import HERE, SECRET, rpc, sender

WP = {"X-Durable-Workflow-Protocol-Version": "1.20", "Content-Type": "application/json"}
WORKER, QUEUE = "w-1", "q-resent"


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[tuple[Node, Any]]:
    async with node_app(tmp_path) as (node, http):
        node.engine.peers = Peers(node.cfg.node_id, SECRET, node.clock, node.started_at)
        try:
            r = await http.post("/api/worker/register", json={"worker_id": WORKER, "task_queue": QUEUE, "runtime": "python"}, headers=WP)
            assert r.status_code == 201, await r.get_data()
            yield node, http
        finally:
            await node.engine.peers.aclose()


async def _start(http: Any, workflow_id: str) -> str:
    body = {"workflow_type": "t", "workflow_id": workflow_id, "task_queue": QUEUE, "input": []}
    r = await http.post("/api/workflows", json=body, headers=CP)
    assert r.status_code == 201, await r.get_data()
    return str((await r.get_json())["run_id"])


def _poll_body(poll_id: str, timeout: int = 1) -> bytes:
    return json.dumps({"worker_id": WORKER, "task_queue": QUEUE, "timeout_seconds": timeout, "poll_request_id": poll_id}).encode()


async def _poll(http: Any, node: Node, body: bytes, *, kind: str = "workflow", forwarded: bool, rerouted: bool) -> Any:
    path = f"/api/worker/{kind}-tasks/poll"
    headers = dict(WP)
    if forwarded:
        headers.update(sender(node).signed_headers("POST", path, body, HERE))
    if rerouted:
        headers[REROUTED_HEADER] = "1"
    r = await http.post(path, data=body, headers=headers)
    assert r.status_code == 200, await r.get_data()
    return (await r.get_json())["task"]


def _lose_the_home(node: Node) -> None:
    """The node that answered the first poll is gone: its memory of polls goes with it."""
    node.workers._polls.clear()


async def test_a_rerouted_poll_gets_the_workflow_task_the_lost_home_leased(member: tuple[Node, Any]) -> None:
    node, http = member
    run_id = await _start(http, "wf-resent")
    first = await _poll(http, node, _poll_body("poll-1"), forwarded=True, rerouted=False)
    assert first is not None and first["run_id"] == run_id
    _lose_the_home(node)

    again = await _poll(http, node, _poll_body("poll-1"), forwarded=True, rerouted=True)
    assert again is not None, "the re-sent poll must get the task leased to it, not wait out the lease"
    assert (again["task_id"], again["workflow_task_attempt"], again["lease_owner"]) == (
        first["task_id"], first["workflow_task_attempt"], WORKER,
    )


async def test_only_a_members_rerouted_mark_looks_for_earlier_leases(member: tuple[Node, Any]) -> None:
    """A fresh poll id, a plain forward, or a client's own (unsigned) mark gets nothing leased elsewhere."""
    node, http = member
    await _start(http, "wf-marks")
    assert await _poll(http, node, _poll_body("poll-a"), forwarded=True, rerouted=False) is not None
    _lose_the_home(node)
    assert await _poll(http, node, _poll_body("poll-a"), forwarded=True, rerouted=False) is None
    assert await _poll(http, node, _poll_body("poll-a"), forwarded=False, rerouted=True) is None
    assert await _poll(http, node, _poll_body("poll-b"), forwarded=True, rerouted=True) is None


async def test_the_leases_poll_survives_a_reload_from_the_journal(member: tuple[Node, Any]) -> None:
    """The run's owner may have died too: its successor folds the poll id from the claim record."""
    node, http = member
    run_id = await _start(http, "wf-reload")
    first = await _poll(http, node, _poll_body("poll-r"), forwarded=True, rerouted=False)
    assert first is not None
    _lose_the_home(node)
    actor = node.engine.actors[run_id]
    actor.stop()
    node.engine.forget(actor)
    await node.engine.ask(run_id, m.Describe())  # recovery loads the run on its new owner

    again = await _poll(http, node, _poll_body("poll-r"), forwarded=True, rerouted=True)
    assert again is not None and again["task_id"] == first["task_id"]


async def test_an_activity_leased_to_a_lost_poll_is_handed_to_its_resend(member: tuple[Node, Any]) -> None:
    node, http = member
    run_id = await _start(http, "wf-activity")
    task = await _poll(http, node, _poll_body("poll-w"), forwarded=False, rerouted=False)
    complete = {
        "task_id": task["task_id"], "lease_owner": WORKER, "workflow_task_attempt": task["workflow_task_attempt"],
        "commands": [{"type": "schedule_activity", "activity_type": "act", "queue": QUEUE, "arguments": None}],
    }
    r = await http.post(f"/api/worker/workflow-tasks/{task['task_id']}/complete", json=complete, headers=WP)
    assert r.status_code == 200, await r.get_data()
    first = await _poll(http, node, _poll_body("poll-act"), kind="activity", forwarded=True, rerouted=False)
    assert first is not None and first["workflow_run_id" if "workflow_run_id" in first else "run_id"] == run_id
    _lose_the_home(node)

    again = await _poll(http, node, _poll_body("poll-act"), kind="activity", forwarded=True, rerouted=True)
    assert again is not None
    assert (again["task_id"], again["attempt_number"]) == (first["task_id"], first["attempt_number"])


async def test_a_member_answers_poll_replay_only_for_the_worker_and_poll_it_leased_to(member: tuple[Node, Any]) -> None:
    node, http = member
    await _start(http, "wf-rpc")
    first = await _poll(http, node, _poll_body("poll-x"), forwarded=False, rerouted=False)
    assert first is not None

    async def ask(worker: str, poll_id: str) -> Any:
        body = cbor2.dumps({"op": "poll_replay", "kind": "workflow", "namespace": "default", "worker": worker,
                            "poll_id": poll_id, "page_size": 500})
        r = await rpc(http, body, sender(node).signed_headers("POST", RPC_PATH, body, HERE))
        assert r.status_code == 200, await r.get_data()
        return cbor2.loads(await r.get_data())["task"]

    found = await ask(WORKER, "poll-x")
    assert found is not None and found["task_id"] == first["task_id"]
    assert await ask("someone-else", "poll-x") is None
    assert await ask(WORKER, "poll-y") is None
