"""Node-to-node calls: CBOR bodies, signed with the cluster secret; not part of the public API."""

from __future__ import annotations

from typing import Any

import cbor2
from quart import Response, request

from actors.run_actor import Msg, NotOwner, RunNotFound, RunUnavailable
from actors.task_queue import Offer
from runtime.errors import ProtocolError
from runtime.peers import RPC_PATH, SIGNATURE_HEADER, TIMESTAMP_HEADER
from runtime.signing import WINDOW_SECONDS

from .app import Api
from .http_guard import REFUSAL


def signing_problem(headers: Any, now: float) -> str | None:
    """What the headers alone show to be wrong with a node call (no body read yet)."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not headers.get(SIGNATURE_HEADER) or not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "a node call carries a node signature and its timestamp"
    if abs(now - int(timestamp)) > WINDOW_SECONDS:
        return "the timestamp is outside the signing window"
    return None


def _closing(response: Response) -> Response:
    response.headers["Connection"] = "close"  # the unread body stays unread
    return response


def register(api: Api) -> None:
    node = api.node
    engine = node.engine

    async def rpc() -> Response:
        peers = engine.peers
        if peers is None:
            return _closing(Response(b"not a cluster member", status=404))
        # Refuse what cannot be a member's call before reading its body: the route's body limit
        # is already enforced (api.http_guard); a call always states its length and is signed.
        problem = signing_problem(request.headers, engine.clock.now())
        if request.scope.get(REFUSAL) or request.content_length is None:
            problem = problem or "node calls state their Content-Length and fit the body limit"
        if problem is not None:
            return _closing(Response(f"refused: {problem}".encode(), status=401))
        body = await request.get_data()
        if request.scope.get(REFUSAL):
            return _closing(Response(b"refused: the body is larger than a node call may be", status=413))
        problem = peers.check("POST", RPC_PATH, body, request.headers)
        if problem is not None:
            return Response(f"refused: {problem}".encode(), status=401)
        try:
            call = cbor2.loads(body)
        except (cbor2.CBORDecodeError, ValueError, TypeError):
            return Response(b"refused: the body is not CBOR", status=400)
        result = await _dispatch(call)
        return Response(cbor2.dumps(result), status=200, content_type="application/cbor")

    async def _dispatch(call: dict[str, Any]) -> dict[str, Any]:
        op = call["op"]
        if op == "offer":
            if engine.is_local_queue(call["kind"], call["namespace"], call["queue"]):
                offer = Offer(call["run_id"], call["task_id"], call["type_name"], call["seq"])
                engine.queue(call["kind"], call["namespace"], call["queue"]).offer(offer)
                return {"accepted": True}
            return {"accepted": False}
        if op == "claim":
            try:  # local only: a claim is never forwarded twice
                if call["kind"] == "workflow":
                    task = await engine.ask(
                        call["run_id"], "claim_wt", task_id=call["task_id"], owner=call["owner"], page_size=call["page_size"]
                    )
                else:
                    task = await engine.ask(call["run_id"], "claim_act", seq=call["seq"], owner=call["owner"])
            except (NotOwner, RunNotFound, RunUnavailable):
                task = None
            return {"task": task}
        if op == "terminal_info":
            try:
                return {"info": await engine.ask(call["run_id"], "terminal_info")}
            except (NotOwner, RunNotFound, RunUnavailable):
                return {"info": None}
        if op == "query_submit":
            if not engine.is_local_queue("query", call["namespace"], call["queue"]):
                return {"error": {"status": 503, "reason": "query_task_queue_unavailable",
                                  "message": "The task queue moved to another node; retry shortly."}}
            try:
                outcome = await node.queries.submit(call["namespace"], call["queue"], call["workflow_type"], dict(call["body"]))
            except ProtocolError as exc:
                return {"error": {"status": exc.status, "reason": exc.reason, "message": exc.message, "extra": exc.extra}}
            return {"outcome": outcome}
        if op == "post":
            engine.post(call["run_id"], Msg(call["kind"], dict(call["args"])))
            return {"accepted": True}
        return {"error": f"unknown op {op}"}

    api.app.add_url_rule(RPC_PATH, endpoint="internal_rpc", view_func=rpc, methods=["POST"])
