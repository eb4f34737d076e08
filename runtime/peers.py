"""Talking to the other nodes: who owns which shard, who answers, and signed internal calls.

The shard manager refreshes the directory every second; a probe loop asks every member's
``/internal/alive`` every second, so a member that stops answering (frozen, partitioned, dead) is
known within about two seconds, long before its lease ends. Internal calls are CBOR over
HTTP, signed with the cluster secret for one receiving node and its current start
(``runtime.signing``); the signature covers a declared SHA-256 of the body, so the receiver
knows a call comes from a member before reading its body, and each call is accepted once.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import cbor2
import httpx
import trio

from .replay_guard import ReplayCache
from .signing import WINDOW_SECONDS, sign, verify

log = logging.getLogger("dw.peers")
RPC_PATH = "/internal/rpc"
ALIVE_PATH = "/internal/alive"  # no database behind it: /api/health would report the database, not the node
FORWARDED_HEADER = "X-DW-Forwarded-By"
REROUTED_HEADER = "X-DW-Rerouted"  # sent again after the member it first went to was lost
TIMESTAMP_HEADER = "X-DW-Node-Timestamp"
SIGNATURE_HEADER = "X-DW-Node-Signature"
BODY_HASH_HEADER = "X-DW-Body-SHA256"
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 1.0
UNREACHABLE_AFTER = 2  # consecutive failed probes (or calls) before a member counts as not answering


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
        self._owners: dict[int, str] = {}  # shard -> node id
        self.urls: dict[str, str] = {}  # node id -> advertise url
        self.audiences: dict[str, str] = {}  # advertise url -> audience of the node there
        self.failures: dict[str, int] = {}  # advertise url -> consecutive failed probes or calls
        self.version = 0  # bumped whenever who owns what, or who answers, changes
        self.accepted = ReplayCache()
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(70.0, connect=3.0), limits=httpx.Limits(max_connections=200))
        self.probe_http = httpx.AsyncClient(timeout=PROBE_TIMEOUT, limits=httpx.Limits(max_connections=20))

    # --- the directory -------------------------------------------------------------

    @property
    def owners(self) -> dict[int, str]:
        return self._owners

    @owners.setter
    def owners(self, value: dict[int, str]) -> None:
        if value != self._owners:
            self.version += 1
        self._owners = value

    def set_owner(self, shard: int, node_id: str) -> None:
        if self._owners.get(shard) != node_id:
            self._owners[shard] = node_id
            self.version += 1

    def set_directory(self, nodes: list[Any]) -> None:
        """Members' addresses and starts, from the ``nodes`` table (NodeRow-like objects)."""
        audiences = {n.advertise_url: audience(n.node_id, n.started_at) for n in nodes if n.advertise_url}
        if audiences != self.audiences:
            self.version += 1  # a member restarted (new start) or moved
        self.urls = {n.node_id: n.advertise_url for n in nodes if n.advertise_url}
        self.audiences = audiences

    def reachable(self, url: str) -> bool:
        return self.failures.get(url, 0) < UNREACHABLE_AFTER

    def owner_url(self, shard: int) -> str | None:
        """The URL of the member that owns ``shard`` and answers; None if that is this node or nobody."""
        owner = self._owners.get(shard)
        if owner is None or owner == self.node_id:
            return None
        url = self.urls.get(owner)
        return url if url is not None and self.reachable(url) else None

    def _note(self, url: str, ok: bool) -> None:
        before = self.reachable(url)
        self.failures[url] = 0 if ok else self.failures.get(url, 0) + 1
        if before != self.reachable(url):
            self.version += 1
            if ok:
                log.info("node at %s answers again", url)
            else:
                log.warning("node at %s does not answer; its shards count as unowned until it does or moves", url)

    def suspect(self, url: str) -> None:
        """A call to ``url`` got no answer in time: count it like a failed probe."""
        self._note(url, False)

    async def probe_loop(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Ask every other member's health each second (a round never fails the loop)."""
        task_status.started()
        while True:
            targets = [url for node, url in self.urls.items() if node != self.node_id]
            async with trio.open_nursery() as nursery:
                for url in targets:
                    nursery.start_soon(self._probe, url)
                nursery.start_soon(trio.sleep, PROBE_INTERVAL)

    async def _probe(self, url: str) -> None:
        try:
            with trio.fail_after(PROBE_TIMEOUT + 0.5):
                response = await self.probe_http.get(url.rstrip("/") + ALIVE_PATH)
            self._note(url, response.status_code < 300)
        except (httpx.HTTPError, trio.TooSlowError, OSError):
            self._note(url, False)

    # --- signatures ----------------------------------------------------------------

    def signed_headers(self, method: str, path: str, body: bytes, url: str) -> dict[str, str]:
        digest = hashlib.sha256(body).hexdigest()
        s = sign(self.secret, method, path, digest, self.clock.now(), self.audiences.get(url, ""))
        return {FORWARDED_HEADER: self.node_id, TIMESTAMP_HEADER: s.timestamp, SIGNATURE_HEADER: s.signature,
                BODY_HASH_HEADER: digest}

    def check_headers(self, method: str, path: str, headers: Any) -> str | None:
        """Before reading the body: None when a member signed this call for this node and it was
        not delivered before; otherwise why not. The body must then match ``check_body``."""
        timestamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        digest = headers.get(BODY_HASH_HEADER, "")
        problem = verify(self.secret, method, path, digest, timestamp, signature, self.clock.now(), self.me)
        if problem is not None:
            return problem
        if self.accepted.seen(bytes.fromhex(signature), self.clock.now(), int(timestamp) + 2 * WINDOW_SECONDS):
            return "the request was already delivered once (replay)"
        return None

    @staticmethod
    def check_body(body: bytes, headers: Any) -> str | None:
        if hashlib.sha256(body).hexdigest() != headers.get(BODY_HASH_HEADER, ""):
            return "the body is not the one that was signed"
        return None

    def check(self, method: str, path: str, body: bytes, headers: Any) -> str | None:
        return self.check_headers(method, path, headers) or self.check_body(body, headers)

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

    # --- calls ---------------------------------------------------------------------

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

    async def forward(
        self, url: str, method: str, path: str, headers: dict[str, str], body: bytes, *, rerouted: bool = False
    ) -> httpx.Response:
        """Send a client's request on; ``path`` is the raw path and query, sent byte for byte."""
        drop = ("host", "content-length", "connection", "accept-encoding", "transfer-encoding", REROUTED_HEADER.lower(),
                FORWARDED_HEADER.lower(), TIMESTAMP_HEADER.lower(), SIGNATURE_HEADER.lower(), BODY_HASH_HEADER.lower())
        out = {k: v for k, v in headers.items() if k.lower() not in drop}
        out.update(self.signed_headers(method, path, body, url))
        if rerouted:
            out[REROUTED_HEADER] = "1"
        request = self.http.build_request(method, url.rstrip("/"), headers=out, content=body)
        request.url = request.url.copy_with(raw_path=path.encode("latin-1"))
        return await self.http.send(request)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.probe_http.aclose()
