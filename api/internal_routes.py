"""Node-to-node calls: CBOR bodies, signed with the cluster secret; not part of the public API."""

from __future__ import annotations

from typing import Any

import cbor2
from quart import Response, request

from actors import messages as m
from actors.run_actor import NotOwner, RunNotFound, RunUnavailable
from actors.task_queue import Offer
from persistence.journal import InstanceRow, StoreUnavailable
from runtime import poll_recovery
from runtime.errors import ProtocolError
from runtime.node import Node
from runtime.peers import ALIVE_PATH, RPC_PATH

from .endpoints import Api
from .http_guard import REFUSAL


def _closing(response: Response) -> Response:
    response.headers["Connection"] = "close"  # the unread body stays unread
    return response


SUBMITS = {  # op -> (the queue kind whose home holds it, the node's service, the reason when it moved)
    "query_submit": ("query", "queries", "query_task_queue_unavailable"),
    "validation_submit": ("workflow", "validation", "update_validation_task_queue_unavailable"),
}


async def _dispatch(node: Node, call: dict[str, Any]) -> dict[str, Any]:
    """One node call, run here: offers, claims, run starts, terminal info, query submissions, posts."""
    engine = node.engine
    op = call["op"]
    if op == "offers":
        refused = 0
        for o in call["offers"]:
            if engine.router.is_local_queue(o["kind"], o["namespace"], o["queue"]):
                offer = Offer(o["run_id"], o["task_id"], o["type_name"], o["seq"], o.get("sticky"), float(o.get("sticky_until") or 0.0),
                              o.get("needs"), o.get("build"), o.get("session"))
                engine.queue(o["kind"], o["namespace"], o["queue"]).offer(offer)
            else:
                refused += 1  # not this queue's home (any more): the sender re-sends after its directory changes
        return {"accepted": len(call["offers"]) - refused, "refused": refused}
    if op == "claim":
        try:  # local only: a claim is never forwarded twice
            offer = Offer(call["run_id"], call["task_id"], "", call["seq"])
            task = await node.workers.claim_here(call["kind"], offer, call["owner"], call["page_size"], call.get("poll_id"))
        except (NotOwner, RunNotFound, RunUnavailable):
            task = None
        return {"task": task}
    if op == "poll_replay":  # a re-sent poll asks whether a run here leased it something (runtime.poll_recovery)
        task = await poll_recovery.replay_here(
            engine, call["kind"], call["namespace"], call["worker"], call["poll_id"], call["page_size"]
        )
        return {"task": task}
    if op == "start_run":
        try:  # local only: a created run's start is committed by its owner, never forwarded twice
            message = m.StartRun(meta=dict(call["meta"]), accepted=bool(call["accepted"]), instance=InstanceRow(**call["instance"]))
            await engine.ask(call["run_id"], message)
        except (NotOwner, RunUnavailable):
            return {"started": False}
        return {"started": True}
    if op == "activity_running":  # is this activity execution's attempt still running here (a worker session's count)
        try:
            view = await engine.ask(call["run_id"], m.ReadActivity(execution_id=call["execution_id"]))
        except (NotOwner, RunUnavailable):
            return {"running": True}  # moving: count it until its new owner answers
        except RunNotFound:
            return {"running": False}
        return {"running": view is not None and view.status == "running"}
    if op == "terminal_info":
        try:
            return {"info": await engine.ask(call["run_id"], m.TerminalInfo())}
        except (NotOwner, RunNotFound, RunUnavailable):
            return {"info": None}
    if op in SUBMITS:  # an ephemeral task held on this queue's home until a worker answers (the call stays open)
        kind, service, moved = SUBMITS[op]
        if not engine.router.is_local_queue(kind, call["namespace"], call["queue"]):
            return {"error": {"status": 503, "reason": moved, "message": "The task queue moved to another node; retry shortly."}}
        try:
            outcome = await getattr(node, service).submit(call["namespace"], call["queue"], call["workflow_type"], dict(call["body"]))
        except ProtocolError as exc:
            return {"error": {"status": exc.status, "reason": exc.reason, "message": exc.message, "extra": exc.extra}}
        return {"outcome": outcome}
    if op == "ask":  # a message the sender counts as done only once the run has committed it
        try:
            message = m.from_wire(call["kind"], call["args"])
        except m.BadMessage as exc:
            return {"error": str(exc)}
        try:
            return {"answer": await engine.ask(call["run_id"], message)}
        except RunNotFound:
            return {"error": "run_not_found"}
        except (NotOwner, RunUnavailable):
            return {"retry": True}
        except ProtocolError as exc:
            return {"error": exc.reason}
    if op == "post":
        try:
            message = m.from_wire(call["kind"], call["args"])
        except m.BadMessage as exc:
            return {"error": str(exc)}
        engine.post(call["run_id"], message)
        return {"accepted": True}
    return {"error": f"unknown op {op}"}


def register(api: Api) -> None:
    node = api.node
    engine = node.engine

    async def rpc() -> Response:
        peers = engine.peers
        if peers is None:
            return _closing(Response(b"not a cluster member", status=404))
        # A member's call is known before its body is read: the signature covers a declared
        # digest of the body (runtime.peers). Anything else is refused unread; the route's body
        # limit is enforced as the body streams (api.http_guard).
        problem = peers.check_headers("POST", RPC_PATH, request.headers)
        if problem is None and (request.scope.get(REFUSAL) or request.content_length is None):
            problem = "node calls state their Content-Length and fit the body limit"
        if problem is not None:
            return _closing(Response(f"refused: {problem}".encode(), status=401))
        body = await request.get_data()
        if request.scope.get(REFUSAL):
            return _closing(Response(b"refused: the body is larger than a node call may be", status=413))
        problem = peers.check_body(body, request.headers)
        if problem is not None:
            return Response(f"refused: {problem}".encode(), status=401)
        try:
            call = cbor2.loads(body)
        except (cbor2.CBORDecodeError, ValueError, TypeError):
            return Response(b"refused: the body is not CBOR", status=400)
        try:
            result = await _dispatch(node, call)
        except StoreUnavailable as exc:
            return Response(f"unavailable: {exc}".encode(), status=503)
        return Response(cbor2.dumps(result), status=200, content_type="application/cbor")

    api.app.add_url_rule(RPC_PATH, endpoint="internal_rpc", view_func=rpc, methods=["POST"], provide_automatic_options=False)

    async def alive() -> Response:
        """Liveness for the other members' probes: answers while this process serves, database or not."""
        return Response(b"", status=204)

    api.app.add_url_rule(ALIVE_PATH, endpoint="internal_alive", view_func=alive, methods=["GET"], provide_automatic_options=False)
