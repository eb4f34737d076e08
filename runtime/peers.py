"""Talking to the other nodes: who owns which shard, and signed internal calls.

The shard manager refreshes the directory every second. Internal calls are CBOR over
HTTP, signed with the cluster secret (HMAC over method, path, timestamp and body), so
only members can offer tasks to a queue or claim them from a run.
"""

from __future__ import annotations

import logging
from typing import Any

import cbor2
import httpx

from .signing import sign, verify

log = logging.getLogger("dw.peers")
RPC_PATH = "/internal/rpc"
FORWARDED_HEADER = "X-DW-Forwarded-By"
TIMESTAMP_HEADER = "X-DW-Node-Timestamp"
SIGNATURE_HEADER = "X-DW-Node-Signature"


class PeerError(Exception):
    pass


class Peers:
    def __init__(self, node_id: str, secret: bytes, clock: Any) -> None:
        self.node_id = node_id
        self.secret = secret
        self.clock = clock
        self.owners: dict[int, str] = {}  # shard -> node id
        self.urls: dict[str, str] = {}  # node id -> advertise url
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(70.0, connect=3.0), limits=httpx.Limits(max_connections=200))

    def url_of_shard(self, shard: int) -> str | None:
        owner = self.owners.get(shard)
        if owner is None or owner == self.node_id:
            return None
        return self.urls.get(owner)

    def signed_headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        s = sign(self.secret, method, path, body, self.clock.now())
        return {FORWARDED_HEADER: self.node_id, TIMESTAMP_HEADER: s.timestamp, SIGNATURE_HEADER: s.signature}

    def check(self, method: str, path: str, body: bytes, headers: Any) -> str | None:
        return verify(
            self.secret, method, path, body, headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, ""),
            self.clock.now(),
        )

    async def call(self, url: str, op: str, **args: Any) -> Any:
        body = cbor2.dumps({"op": op, **args})
        headers = {"Content-Type": "application/cbor", **self.signed_headers("POST", RPC_PATH, body)}
        try:
            response = await self.http.post(url.rstrip("/") + RPC_PATH, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PeerError(f"{op} to {url} failed: {exc}") from exc
        if response.status_code != 200:
            raise PeerError(f"{op} to {url} answered {response.status_code}: {response.text[:200]}")
        return cbor2.loads(response.content)

    async def forward(self, url: str, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        out = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
        out.update(self.signed_headers(method, path, body))
        return await self.http.request(method, url.rstrip("/") + path, headers=out, content=body)

    async def aclose(self) -> None:
        await self.http.aclose()
