"""Cluster: what an attacker can do between the nodes of a cluster (issue 9, points 4, 14, and
the node-call limits of point 2). Two nodes on one PostgreSQL, the signature auth driver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import cbor2
import httpx
import pytest

from actors.records import from_stored
from persistence.ids import shard_of_run
from runtime.peers import BODY_HASH_HEADER, FORWARDED_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, audience
from runtime.signing import body_digest, sign
from tests.e2e.harness import wait_until
from tests.e2e.server import ServerProcess, stop_all
from tests.e2e.stores import store

pytestmark = pytest.mark.e2e
SHARDS = 8
KEYS = {"DW_AUTH_DRIVER": "signature", "DW_OPERATOR_SIGNATURE_KEY": "op-key", "DW_ADMIN_SIGNATURE_KEY": "admin-key"}


def _node(tmp_path: Path, name: str, dsn: str) -> ServerProcess:
    port = ServerProcess.free_port()
    env = {"DW_NODE_ID": name, "DW_SHARD_COUNT": str(SHARDS), "DW_ADVERTISE_URL": f"http://127.0.0.1:{port}", **KEYS}
    node = ServerProcess(tmp_path / name, env=env, port=port, database=dsn)
    node.start()
    return node


def _rows(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def read() -> list[asyncpg.Record]:
        base, _, query = dsn.partition("?")
        conn = await asyncpg.connect(base, server_settings={"search_path": query.removeprefix("search_path=")})
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(read())


def signed(key: str, method: str, path: str, body: bytes = b"", nonce: str | None = None) -> dict[str, str]:
    """A client's signed headers (the README's scheme; ``path`` decoded, as the server reads it)."""
    stamp = str(int(time.time()))
    nonce = nonce or uuid.uuid4().hex
    text = "\n".join(["DW-HMAC-SHA256", method, path, "", "", stamp, hashlib.sha256(body).hexdigest(), nonce])
    return {"X-DW-Timestamp": stamp, "X-DW-Nonce": nonce, "Content-Type": "application/json",
            "X-Durable-Workflow-Control-Plane-Version": "2",
            "X-Signature": hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()}


def call(url: str, method: str, path: str, body: Any = None, *, raw_path: str | None = None,
         extra: dict[str, str] | None = None) -> httpx.Response:
    data = json.dumps(body).encode() if body is not None else b""
    key = "admin-key" if path.startswith("/api/namespaces") else "op-key"
    with httpx.Client(timeout=30) as http:
        request = http.build_request(method, url + (raw_path or path), content=data,
                                     headers={**signed(key, method, path, data), **(extra or {})})
        if raw_path:
            request.url = request.url.copy_with(raw_path=raw_path.encode())
        return http.send(request)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def _converged(url: str, node_ids: list[str], timeout: float = 60.0) -> dict[str, int]:
    """Until each of ``node_ids`` is active with its fair share and every shard is owned.

    Read where an operator reads it (``GET /api/cluster/info``, signed: this cluster runs the
    signature driver). The scenario needs each node serving its runs before it starts, and again
    after a restart; the deadline only bounds how long a cluster that never converges takes to fail.
    """
    fair = SHARDS // len(node_ids)

    def owned() -> dict[str, int]:
        r = call(url, "GET", "/api/cluster/info")
        assert r.status_code == 200, r.text
        return {n["node_id"]: n["shards_owned"] for n in r.json()["cluster"]["nodes"] if n["status"] == "active"}

    def ready() -> dict[str, int] | None:
        seen = owned()
        held = sum(seen.values()) == SHARDS and all(seen.get(n, 0) >= fair for n in node_ids)
        return seen if held else None

    try:
        return wait_until(ready, timeout=timeout, what="cluster converged", interval=0.2)
    except AssertionError:
        raise AssertionError(f"{node_ids} never held their shares of {SHARDS} within {timeout:g}s: {owned()}") from None


def _owner_of_run(dsn: str, run_id: str) -> str:
    shard = shard_of_run(run_id)
    return _rows(dsn, "SELECT owner_node FROM shards WHERE shard_id = $1", shard)[0][0]


def _events(dsn: str, run_id: str, event_type: str) -> list[dict[str, Any]]:
    """The payloads of the run's journaled events of ``event_type``, in order."""
    return [record.payload for (body,) in _rows(dsn, "SELECT body FROM records WHERE run_id = $1 ORDER BY jseq", run_id)
            if (record := from_stored(cbor2.loads(body))).kind == event_type]


def _signals(dsn: str, run_id: str) -> list[str]:
    names = []
    for (body,) in _rows(dsn, "SELECT body FROM records WHERE run_id = $1 ORDER BY jseq", run_id):
        record = from_stored(cbor2.loads(body))
        if record.kind == "SignalReceived":
            names.append(record.payload["signal_name"])
    return names


def test_signatures_and_node_calls_are_accepted_once_across_the_cluster(tmp_path: Path) -> None:
    with store("postgresql") as dsn:
        assert dsn is not None
        nodes = {name: _node(tmp_path, name, dsn) for name in ("node-1", "node-2")}
        try:
            one, two = nodes["node-1"].url, nodes["node-2"].url
            assert one is not None and two is not None
            _converged(one, list(nodes))  # both hold their share: the run below must land on node 2's

            # point 4: a signed request accepted by one node is refused by the other
            ns_body = json.dumps({"name": f"ns-{uuid.uuid4().hex[:8]}"}).encode()
            headers = signed("admin-key", "POST", "/api/namespaces", ns_body)
            with httpx.Client(timeout=30) as http:
                assert http.post(one + "/api/namespaces", content=ns_body, headers=headers).status_code == 201
                again = http.post(two + "/api/namespaces", content=ns_body, headers=headers)
            assert again.status_code == 401 and "already used" in again.json()["message"], again.text

            # a workflow on node 2's shards, started through node 1 (forwarded: the owner checks the
            # client's signature again but does not count it as a second use)
            for _ in range(40):
                wf = f"sec-{uuid.uuid4().hex[:10]}"
                started = call(one, "POST", "/api/workflows", {"workflow_id": wf, "workflow_type": "t", "task_queue": "nowhere"})
                assert started.status_code == 201, started.text
                run_id = started.json()["run_id"]
                if _owner_of_run(dsn, run_id) == "node-2":
                    break
            else:
                raise AssertionError("no workflow landed on node 2's shards")

            # point 14: a client's forwarding header is ignored, not obeyed (it made the request wait 8 s, then 503)
            began = time.monotonic()
            forged = call(one, "GET", f"/api/workflows/{wf}", extra={FORWARDED_HEADER: "node-2"})
            assert forged.status_code == 200 and forged.json()["run_id"] == run_id, forged.text
            assert time.monotonic() - began < 3

            # issue 10 point 5 (the forwarding half): the raw path travels, encoded names survive
            for raw, name in (("x%3Fy=1", "x?y=1"), ("x%2541", "x%41")):
                r = call(one, "POST", f"/api/workflows/{wf}/signal/{name}", {"input": []},
                         raw_path=f"/api/workflows/{wf}/signal/{raw}")
                assert r.status_code in (200, 202), r.text
            assert _signals(dsn, run_id) == ["x?y=1", "x%41"]

            # point 2 for node calls: a call no member signed is refused before its body is read,
            # and the node keeps no more of it in memory than it had
            assert nodes["node-2"].proc is not None
            pid = nodes["node-2"].proc.pid
            before = _rss_mib(pid)
            host, port = two.removeprefix("http://").split(":")
            forged = {TIMESTAMP_HEADER: str(int(time.time())), SIGNATURE_HEADER: "ab" * 32, BODY_HASH_HEADER: "cd" * 32}
            for framing in (b"Content-Length: 1073741824\r\n", b"Transfer-Encoding: chunked\r\n"):
                with socket.create_connection((host, int(port)), timeout=10) as sock:
                    sock.sendall(b"POST /internal/rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/cbor\r\n" + framing
                                 + "".join(f"{k}: {v}\r\n" for k, v in forged.items()).encode() + b"\r\n")
                    sent = 0
                    try:
                        while sent < 256 * 2**20:
                            sock.sendall(b"x" * 65536 if b"Content-Length" in framing else b"10000\r\n" + b"x" * 65536 + b"\r\n")
                            sent += 65536
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    sock.settimeout(5)
                    try:
                        head = sock.recv(4096)
                    except ConnectionResetError:
                        head = b""
                assert sent < 16 * 2**20, f"{framing!r}: the node read {sent} bytes of an unsigned call"
                assert head == b"" or head.startswith(b"HTTP/1.1 401"), head[:200]
            assert _rss_mib(pid) - before < 32

            # point 4 again: a restart forgets no signature (the cache is in PostgreSQL)
            signal_body = json.dumps({"input": ["once"]}).encode()
            sig_headers = signed("op-key", "POST", f"/api/workflows/{wf}/signal/once", signal_body)
            with httpx.Client(timeout=30) as http:
                first = http.post(f"{two}/api/workflows/{wf}/signal/once", content=signal_body, headers=sig_headers)
                assert first.status_code in (200, 202), first.text
            nodes["node-2"].stop()
            nodes["node-2"].start()
            # node 2 is back and owns its shards again, so a replay that got past the signature
            # check would be delivered (200/202), not refused for want of an owner
            _converged(one, list(nodes))
            with httpx.Client(timeout=30) as http:
                for url in (two, one):
                    replay = http.post(f"{url}/api/workflows/{wf}/signal/once", content=signal_body, headers=sig_headers)
                    assert replay.status_code == 401, replay.text
            assert _signals(dsn, run_id).count("once") == 1

            # point 4 for node-to-node calls: a captured signed call is delivered once. Peers may
            # post only a few message kinds to another node's run (actors.messages.POSTABLE); a
            # 'close' (terminate) has an effect in the journal, so it goes last: it ends the run.
            secret = bytes.fromhex(_rows(dsn, "SELECT value FROM cluster_settings WHERE key = 'cluster_secret'")[0][0])
            started_at = _rows(dsn, "SELECT started_at FROM nodes WHERE node_id = 'node-2'")[0][0]
            rpc = cbor2.dumps({"op": "post", "run_id": run_id, "kind": "close",
                               "args": {"kind": "terminate", "reason": "via-rpc", "command_id": uuid.uuid4().hex}})
            s = sign(secret, "POST", "/internal/rpc", body_digest(rpc), time.time(), audience("node-2", started_at))
            rpc_headers = {FORWARDED_HEADER: "node-1", TIMESTAMP_HEADER: s.timestamp, SIGNATURE_HEADER: s.signature,
                           BODY_HASH_HEADER: body_digest(rpc), "Content-Type": "application/cbor"}
            with httpx.Client(timeout=30) as http:
                accepted = http.post(two + "/internal/rpc", content=rpc, headers=rpc_headers)
                replays = [http.post(two + "/internal/rpc", content=rpc, headers=rpc_headers).status_code for _ in range(2)]
                elsewhere = http.post(one + "/internal/rpc", content=rpc, headers=rpc_headers).status_code
            assert accepted.status_code == 200 and cbor2.loads(accepted.content) == {"accepted": True}, accepted.content
            assert replays == [401, 401] and elsewhere == 401, (replays, elsewhere)
            # the post lands in the run's mailbox after the answer: wait for its record
            terminated = wait_until(lambda: _events(dsn, run_id, "TerminateRequested"), timeout=30,
                                    what="the node call's TerminateRequested in the run's journal")
            assert [e["reason"] for e in terminated] == ["via-rpc"], terminated
        finally:
            stop_all(nodes.values())
        for node in nodes.values():
            assert "Traceback" not in node.log(), node.log()
