"""Talking to the other nodes: who owns which shard, and signed internal calls.

The shard manager refreshes the directory every second. Internal calls are CBOR over
HTTP, signed with the cluster secret for one receiving node and its current start
(``runtime.signing``), and each is accepted once, so only members can offer tasks to a queue
or claim them from a run, and a captured call cannot be delivered twice.
"""

from __future__ import annotations

import logging
from typing import Any

import cbor2
import httpx

from .replay_guard import ReplayCache
from .signing import WINDOW_SECONDS, sign, verify

log = logging.getLogger("dw.peers")
RPC_PATH = "/internal/rpc"
FORWARDED_HEADER = "X-DW-Forwarded-By"
TIMESTAMP_HEADER = "X-DW-Node-Timestamp"
SIGNATURE_HEADER = "X-DW-Node-Signature"


class PeerError(Exception):
    pass


def audience(node_id: str, started_at: float | None) -> str:
    """Who a signed call is for: a node id and its start (a restarted node is a new audience)."""
    return f"{node_id}@{started_at or 0:.6f}"


class Peers:
    def __init__(self, node_id: str, secret: bytes, clock: Any, started_at: float = 0.0) -> None:
        self.node_id = node_id
        self.secret = secret
        self.clock = clock
        self.me = audience(node_id, started_at)
        self.owners: dict[int, str] = {}  # shard -> node id
        self.urls: dict[str, str] = {}  # node id -> advertise url
        self.audiences: dict[str, str] = {}  # advertise url -> audience of the node there
        self.accepted = ReplayCache()
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(70.0, connect=3.0), limits=httpx.Limits(max_connections=200))

    def url_of_shard(self, shard: int) -> str | None:
        owner = self.owners.get(shard)
        if owner is None or owner == self.node_id:
            return None
        return self.urls.get(owner)

    def set_directory(self, nodes: list[Any]) -> None:
        """Members' addresses and starts, from the ``nodes`` table (NodeRow-like objects)."""
        self.urls = {n.node_id: n.advertise_url for n in nodes if n.advertise_url}
        self.audiences = {n.advertise_url: audience(n.node_id, n.started_at) for n in nodes if n.advertise_url}

    def signed_headers(self, method: str, path: str, body: bytes, url: str) -> dict[str, str]:
        s = sign(self.secret, method, path, body, self.clock.now(), self.audiences.get(url, ""))
        return {FORWARDED_HEADER: self.node_id, TIMESTAMP_HEADER: s.timestamp, SIGNATURE_HEADER: s.signature}

    def check(self, method: str, path: str, body: bytes, headers: Any) -> str | None:
        """None when a member signed this request for this node and it was not delivered before."""
        timestamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        problem = verify(self.secret, method, path, body, timestamp, signature, self.clock.now(), self.me)
        if problem is not None:
            return problem
        if self.accepted.seen(bytes.fromhex(signature), self.clock.now(), int(timestamp) + 2 * WINDOW_SECONDS):
            return "the request was already delivered once (replay)"
        return None

    def forwarded_by(self, method: str, path: str, body: bytes, headers: Any) -> str | None:
        """The member that forwarded this request, if its signature holds; a bare header counts for nothing."""
        sender = headers.get(FORWARDED_HEADER)
        if not sender:
            return None
        problem = self.check(method, path, body, headers)
        if problem is not None:
            log.warning("ignoring %s: %s: %s", FORWARDED_HEADER, sender[:64], problem)
            return None
        return sender

    async def call(self, url: str, op: str, **args: Any) -> Any:
        body = cbor2.dumps({"op": op, **args})
        headers = {"Content-Type": "application/cbor", **self.signed_headers("POST", RPC_PATH, body, url)}
        try:
            response = await self.http.post(url.rstrip("/") + RPC_PATH, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PeerError(f"{op} to {url} failed: {exc}") from exc
        if response.status_code != 200:
            raise PeerError(f"{op} to {url} answered {response.status_code}: {response.text[:200]}")
        return cbor2.loads(response.content)

    async def forward(self, url: str, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        """Send a client's request on; ``path`` is the raw path and query, sent byte for byte."""
        drop = ("host", "content-length", "connection", "accept-encoding", "transfer-encoding",
                FORWARDED_HEADER.lower(), TIMESTAMP_HEADER.lower(), SIGNATURE_HEADER.lower())
        out = {k: v for k, v in headers.items() if k.lower() not in drop}
        out.update(self.signed_headers(method, path, body, url))
        request = self.http.build_request(method, url.rstrip("/"), headers=out, content=body)
        request.url = request.url.copy_with(raw_path=path.encode("latin-1"))
        return await self.http.send(request)

    async def aclose(self) -> None:
        await self.http.aclose()
