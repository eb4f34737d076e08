"""End-to-end: what an attacker sends a single node, over real sockets (issue 9).

Each test names the point of the issue it shows. Cluster-wide cases (a replay to another node,
node-to-node calls, forged forwarding) are in ``tests/cluster/test_cluster_security.py``; the
pure parts (signature form, timestamps, nesting, the body guard) have unit tests too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.envelopes import CP, JSON, WP, control_error, unique, worker_error

from .harness import wait_until
from .server import ServerProcess
from .worker_calls import TIMER_60, assert_no_instance, complete, history, lease_task

pytestmark = pytest.mark.e2e
LIMIT = 2 * 1024 * 1024
KEEP_ALIVE = 2


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def raw_request(url: str, head: bytes, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send raw bytes on a fresh connection; the answer, and whether the server closed it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        data, closed = b"", False
        sock.settimeout(2.0)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except TimeoutError:
            pass
        return data, closed


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("dw-hostile"),
                           env={"DW_WORKFLOW_TASK_LEASE_SECONDS": "30", "DW_HTTP_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE)})
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert "Traceback" not in server.log(), server.log()


@pytest.fixture
def http(node: ServerProcess) -> Iterator[httpx.Client]:
    assert node.url is not None
    with httpx.Client(base_url=node.url, timeout=30) as client:
        yield client


# --- point 2: bodies are bounded before anything buffers them ---------------------------


@pytest.mark.parametrize("route", ["/api/worker/workflow-tasks/poll", "/api/workflows", "/api/no-such-route"])
def test_a_chunked_body_far_over_the_limit_is_not_buffered(node: ServerProcess, route: str) -> None:
    """Without a credential, a client streamed 256 MiB into the server's memory (RSS +388 MiB
    kept). Now the server stops reading at the limit, answers 413 and closes; RSS stays within 32 MiB."""
    assert node.proc is not None and node.url is not None
    pid = node.proc.pid
    before = rss_mib(pid)
    host, port = node.url.removeprefix("http://").split(":")
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent, peak = 0, before
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n".encode()
                     + b"Content-Type: application/json\r\nX-Durable-Workflow-Protocol-Version: 1.20\r\n\r\n")
        deadline = time.monotonic() + 30
        try:
            while sent < 128 * 1024 * 1024 and time.monotonic() < deadline:
                sock.sendall(frame)
                sent += len(chunk)
                if sent % (8 * 1024 * 1024) == 0:
                    peak = max(peak, rss_mib(pid))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection after its 413: that is the point
        peak = max(peak, rss_mib(pid))
        sock.settimeout(5)
        try:
            answer = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    print(f"{route}: sent {sent / 2**20:.0f} MiB, server RSS {before:.0f} -> peak {peak:.0f} MiB")
    assert sent < 64 * 1024 * 1024, f"the server kept reading: {sent} bytes accepted"
    assert peak - before < 32, (before, peak)
    if answer:  # the 413 may be lost to the reset of a connection the client kept writing into
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
        assert b"payload_too_large" in answer or b"not_found" in answer, answer[:400]
    with httpx.Client(base_url=node.url, timeout=10) as client:  # and the node still serves
        assert client.get("/api/health").status_code == 200


def test_a_declared_length_over_the_limit_is_answered_before_the_body_is_sent(node: ServerProcess) -> None:
    assert node.url is not None
    head = (b"POST /api/worker/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Durable-Workflow-Protocol-Version: 1.20\r\nContent-Length: 67108864\r\n\r\n")
    answer, closed = raw_request(node.url, head)
    assert answer.startswith(b"HTTP/1.1 413") and b"payload_too_large" in answer and closed, answer[:300]


def test_a_body_at_the_limit_is_still_read(http: httpx.Client) -> None:
    pad = LIMIT - len(json.dumps({"workflow_type": "t", "memo": {"p": ""}}))
    raw = json.dumps({"workflow_type": "t", "memo": {"p": "x" * pad}}).encode()
    assert len(raw) == LIMIT
    r = http.post("/api/workflows", content=raw, headers={**CP, **JSON})
    assert r.status_code in (201, 422), r.text  # read and judged (the memo limit), not refused unread
    assert r.json()["reason"] != "payload_too_large" if r.status_code == 422 else True


# --- point 13: ambiguous framing ----------------------------------------------------------


@pytest.mark.parametrize("attempt", range(8))  # it once failed on a race, one time in two
def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(node: ServerProcess, attempt: int) -> None:
    assert node.url is not None
    wf = unique("wf-smuggle")
    body = json.dumps({"workflow_id": wf, "workflow_type": "t"}).encode()
    head = (b"POST /api/workflows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Durable-Workflow-Control-Plane-Version: 2\r\nTransfer-Encoding: chunked\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
            + b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer, closed = raw_request(node.url, head)
    assert answer.startswith(b"HTTP/1.1 400") and b"conflicting_framing" in answer, answer[:300]
    assert closed and answer.count(b"HTTP/1.1") == 1  # nothing after it is served on that connection
    with httpx.Client(base_url=node.url, timeout=10) as client:
        assert_no_instance(client, wf)


# --- point 6: connections are closed ------------------------------------------------------


def _holds_connection_from(pid: int, client_port: int) -> bool:
    """Does the server process still hold the socket of the connection from ``client_port``?"""
    inodes = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == client_port:
                    inodes.add(fields[9])
    held = {str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir() if fd.is_symlink()}
    return any(f"socket:[{inode}]" in held for inode in inodes)


def _unsent_to(pid: int, client_port: int) -> int:
    """Bytes the server has written to the connection from ``client_port`` that the client has
    not taken yet (the send queue of the server's socket, ``tx_queue`` in /proc/net/tcp)."""
    unsent = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == client_port:
                    unsent += int(fields[4].split(":")[0], 16)
    return unsent


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading whatever it sends), None if it did not."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(node: ServerProcess) -> None:
    assert node.url is not None
    with _connect(node.url) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        closed = _closed_within(sock, KEEP_ALIVE + 3)
    assert closed is not None and closed >= KEEP_ALIVE - 0.5, closed


@pytest.mark.parametrize("request_head", [
    b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # the client asks
    b"POST /api/workflows HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",  # answered before the body
], ids=["client-close", "early-answer"])
def test_a_connection_close_answer_closes_the_connection(node: ServerProcess, request_head: bytes) -> None:
    assert node.url is not None
    with _connect(node.url) as sock:
        sock.sendall(request_head)
        closed = _closed_within(sock, 3)
    assert closed is not None and closed < 2, closed


def _exchange(url: str, request: bytes, pieces: int) -> tuple[int, dict[str, Any]]:
    """Send ``request`` in one write or in ``pieces`` writes a few ms apart; the status and the
    JSON body of the answer."""
    with _connect(url) as sock:
        step = -(-len(request) // pieces)
        for at in range(0, len(request), step):
            sock.sendall(request[at:at + step])
            if pieces > 1:
                time.sleep(0.005)
        answer = b""
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                re.search(rb"(?i)content-length: *(\d+)", answer.partition(b"\r\n\r\n")[0]).group(1)):  # type: ignore[union-attr]
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("pieces", [1, 40], ids=["one-write", "in-pieces"])
def test_a_request_head_over_the_limit_is_refused_however_the_network_splits_it(node: ServerProcess, pieces: int) -> None:
    """h11 checked its limit only while a head was incomplete: a head a little over it was parsed
    when it came in one read and refused when it came in two."""
    assert node.url is not None
    over = b"GET /api/workflows?query=" + b"x" * (66 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, body = _exchange(node.url, over, pieces)
    assert (status, body["reason"]) == (431, "request_head_too_large"), body
    assert "fewer conditions" in body["message"]
    query = " AND ".join(['WorkflowType = "x"'] * 2001)
    target = httpx.Request("GET", "http://x/api/workflows", params={"query": query}).url.raw_path
    under = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Durable-Workflow-Control-Plane-Version: 2\r\n\r\n"
    assert 48 * 1024 < len(under) < 64 * 1024
    status, body = _exchange(node.url, under, pieces)
    assert (status, body["reason"]) == (422, "invalid_query"), body


@pytest.mark.parametrize(("request_bytes", "answer"), [
    (b"HELLO THERE\r\n\r\n", (400, "malformed_request")),
    (b"POST /api/workflows HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", (501, "unsupported_transfer_encoding")),
], ids=["not-http", "gzip-encoding"])
def test_what_the_http_layer_refuses_gets_a_json_reason(node: ServerProcess, request_bytes: bytes,
                                                        answer: tuple[int, str]) -> None:
    assert node.url is not None
    status, body = _exchange(node.url, request_bytes, 1)
    assert (status, body["reason"]) == answer, body


def test_a_client_that_pipelines_without_reading_leaks_no_descriptor(node: ServerProcess) -> None:
    """The descriptor of such a connection stayed open for good, long after the client went away."""
    assert node.url is not None and node.proc is not None
    pid = node.proc.pid
    with _connect(node.url) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        port = sock.getsockname()[1]
        sock.settimeout(5)
        try:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n" * 4000)  # answers never read
        except TimeoutError:
            pass  # the server stopped reading: it is blocked writing to us
        # the client goes away only once the server holds answers it cannot deliver (the state
        # that leaked the descriptor), whether or not sendall got everything out first
        wait_until(lambda: _unsent_to(pid, port), timeout=10,
                   what="the server holding unsent answers to the client that does not read")
    wait_until(lambda: not _holds_connection_from(pid, port), timeout=KEEP_ALIVE + 5,
               what="the server releasing the abandoned connection's descriptor")


def test_a_client_that_stops_reading_is_dropped(node: ServerProcess) -> None:
    """A write to a client that never reads waited for ever under hypercorn's shield, holding
    the connection (and graceful shutdown); now a write that makes no progress for 15 s ends it."""
    assert node.url is not None and node.proc is not None
    pid = node.proc.pid
    with _connect(node.url) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        port = sock.getsockname()[1]
        sock.settimeout(3)
        try:
            for _ in range(200):
                sock.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        except TimeoutError:
            pass
        wait_until(lambda: not _holds_connection_from(pid, port), timeout=25, interval=0.5,
                   what="the server dropping the connection of a client that does not read")


# --- point 12: routing quirks -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api//workflows", "/api/workflows/", "/api/workflows//x", "/api/namespaces/"])
def test_odd_slashes_are_not_found_and_echo_no_host(node: ServerProcess, path: str) -> None:
    assert node.url is not None
    answer, _ = raw_request(node.url, f"GET {path} HTTP/1.1\r\nHost: evil.example\r\n"
                            "X-Durable-Workflow-Control-Plane-Version: 2\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404"), answer[:300]
    assert b"evil.example" not in answer and b"location:" not in answer.lower(), answer[:600]
    assert b'"reason":"not_found"' in answer


@pytest.mark.parametrize("path", ["/api/workflows", "/api/namespaces", "/api/worker/register", "/api/cluster/info"])
def test_options_is_not_allowed_and_needs_no_special_case(http: httpx.Client, path: str) -> None:
    r = http.options(path, headers={**CP, **WP})
    assert r.status_code == 405 and r.json()["reason"] == "method_not_allowed", r.text
    assert "allow" not in {k.lower() for k in r.headers} or "OPTIONS" not in r.headers.get("allow", "")


# --- point 10: duplicate query parameters --------------------------------------------------


@pytest.mark.parametrize("query", ["page_size=1&page_size=200", "status=running&status=failed", "query=a&query=b"])
def test_duplicate_query_parameters_are_refused(http: httpx.Client, query: str) -> None:
    body = control_error(http.get(f"/api/workflows?{query}", headers=CP), 400, "duplicate_query_parameter")
    assert body["parameter"] == query.split("=", 1)[0]


# --- points 3 and 9: what could not be stored faithfully is refused ------------------------


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"n": value}
    return value


@pytest.mark.parametrize("field", ["memo", "search_attributes", "input"])
def test_start_payloads_deeper_than_the_limit_are_refused(http: httpx.Client, field: str) -> None:
    wf = unique("wf-deep")
    deep = {"k": _nested(80)} if field != "input" else [_nested(80)]
    r = http.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t", field: deep}, headers=CP)
    body = control_error(r, 422, "payload_too_deep")
    assert body["limit"] == 64
    assert_no_instance(http, wf)


def test_a_deep_side_effect_result_is_refused_and_the_task_stays_leased(http: httpx.Client) -> None:
    t = lease_task(http)
    before = history(http, t.workflow_id, t.run_id)
    r = complete(http, t, [{"type": "record_side_effect", "result": _nested(450)}])
    worker_error(r, 422, "payload_too_deep")
    assert history(http, t.workflow_id, t.run_id) == before
    assert complete(http, t, TIMER_60).status_code == 200  # still ours, and the run still loads


@pytest.mark.parametrize("number", ["1e400", "-1e999"])
@pytest.mark.parametrize("field", ["memo", "input", "search_attributes"])
def test_numbers_that_are_not_finite_are_refused_everywhere(http: httpx.Client, number: str, field: str) -> None:
    """A memo of 1e400 was stored and later sent back as the non-standard Infinity (point 9)."""
    wf = unique("wf-inf")
    value = f'{{"x": {number}}}' if field != "input" else f"[{number}]"
    raw = f'{{"workflow_id": "{wf}", "workflow_type": "t", "{field}": {value}}}'.encode()
    control_error(http.post("/api/workflows", content=raw, headers={**CP, **JSON}), 422, "non_finite_number")
    assert_no_instance(http, wf)


def test_a_signal_argument_that_is_not_finite_is_refused(http: httpx.Client) -> None:
    t = lease_task(http)
    raw = b'{"input": [1e400]}'
    r = http.post(f"/api/workflows/{t.workflow_id}/signal/go", content=raw, headers={**CP, **JSON})
    control_error(r, 422, "non_finite_number")


# --- point 8: list filters at the edges of 64 bits and of SQL ------------------------------


@pytest.fixture
def shared(server_url: str) -> Iterator[httpx.Client]:
    """The session's server per journal backend (SQLite and PostgreSQL)."""
    with httpx.Client(base_url=server_url, timeout=30) as client:
        yield client


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("HostilePrio = 99999999999999999999", "does not fit in 64 bits"),
        ("HostilePrio >= -9223372036854775809", "does not fit in 64 bits"),
        ("HostileScore = 1e999", "must be finite"),
        ("HostileScore < -1e400", "must be finite"),
        (" AND ".join(['WorkflowType = "x"'] * 2001), "at most 50 conditions"),
    ],
)
def test_filters_past_what_the_journal_can_compare_are_refused(shared: httpx.Client, query: str, fragment: str) -> None:
    for name, kind in (("HostilePrio", "int"), ("HostileScore", "double")):
        r = shared.post("/api/search-attributes", json={"name": name, "type": kind}, headers=CP)
        assert r.status_code in (201, 409), r.text
    body = control_error(shared.get("/api/workflows", params={"query": query}, headers=CP), 422, "invalid_query")
    assert fragment in body["message"]


def test_a_value_of_another_type_under_a_numeric_attribute_does_not_break_range_filters(shared: httpx.Client) -> None:
    r = shared.post("/api/search-attributes", json={"name": "HostileRank", "type": "int"}, headers=CP)
    assert r.status_code in (201, 409), r.text
    odd, fine = unique("wf-odd"), unique("wf-fine")
    for wid, rank in ((odd, "high"), (fine, 7)):
        r = shared.post("/api/workflows", json={"workflow_id": wid, "workflow_type": "hostile.rank", "search_attributes": {"HostileRank": rank}},
                        headers=CP)
        assert r.status_code == 201, r.text
    r = shared.get("/api/workflows", params={"query": 'HostileRank >= 5 AND WorkflowType = "hostile.rank"'}, headers=CP)
    assert r.status_code == 200, r.text
    found = {w["workflow_id"] for w in r.json()["workflows"]}
    assert fine in found and odd not in found


def test_start_input_beyond_64_bits_is_a_clear_422(shared: httpx.Client) -> None:
    wf = unique("wf-big")
    r = shared.post("/api/workflows", json={"workflow_id": wf, "workflow_type": "t", "input": [2**70]}, headers=CP)
    body = control_error(r, 422, "validation_failed")
    assert "64-bit" in json.dumps(body)
    assert_no_instance(shared, wf)


# --- point 5: worker ids are per namespace --------------------------------------------------


def test_deregistering_a_worker_leaves_another_namespaces_leases_alone(http: httpx.Client) -> None:
    other = unique("ns-b")
    assert http.post("/api/namespaces", json={"name": other}, headers=CP).status_code == 201
    t = lease_task(http)  # worker t.worker_id holds a workflow task in the default namespace
    r = http.post("/api/worker/register", json={"worker_id": t.worker_id, "task_queue": "elsewhere", "runtime": "python"},
                  headers={**WP, "X-Namespace": other})
    assert r.status_code == 201, r.text
    r = http.delete(f"/api/worker/registrations/{t.worker_id}", headers={**WP, "X-Namespace": other})
    assert r.status_code == 200 and r.json()["recovered_workflow_task_count"] == 0, r.text
    beat = http.post(f"/api/worker/workflow-tasks/{t.task_id}/heartbeat", json=t.lease(), headers=WP)
    assert beat.status_code == 200 and beat.json()["renewed"] is True, beat.text
    assert complete(http, t, TIMER_60).status_code == 200


# --- points 1, 7, 15 and 4 (one node, across a restart): signed requests --------------------


def _signed(key: str, method: str, path: str, body: bytes = b"", *, nonce: str | None = None, ts: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    lines = ["DW-HMAC-SHA256", method, path, "", "", stamp, hashlib.sha256(body).hexdigest()]
    headers = {"X-DW-Timestamp": stamp, **CP, **JSON}
    if nonce is not None:
        lines.append(nonce)
        headers["X-DW-Nonce"] = nonce
    headers["X-Signature"] = hmac.new(key.encode(), "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    return headers


def test_signed_requests_are_accepted_once_in_any_spelling_and_across_a_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"DW_AUTH_DRIVER": "signature", "DW_OPERATOR_SIGNATURE_KEY": "op-key"},
                           port=ServerProcess.free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            wf = unique("wf-signed")
            body = json.dumps({"workflow_id": wf, "workflow_type": "t", "task_queue": "nowhere"}).encode()
            start = _signed("op-key", "POST", "/api/workflows", body)
            assert http.post("/api/workflows", content=body, headers=start).status_code == 201
            signal_body = b'{"input": ["once"]}'
            signal = _signed("op-key", "POST", f"/api/workflows/{wf}/signal/go", signal_body)
            assert http.post(f"/api/workflows/{wf}/signal/go", content=signal_body, headers=signal).status_code in (200, 202)
            sig = signal["X-Signature"]
            # point 1: the same signature with whitespace inside, or in capitals, is the same signature
            for bent in (sig[:2] + " " + sig[2:], sig[:4] + " " + sig[4:6] + " " + sig[6:], sig.upper(), sig[:32] + "  " + sig[32:]):
                r = http.post(f"/api/workflows/{wf}/signal/go", content=signal_body, headers={**signal, "X-Signature": bent})
                assert r.status_code == 401, (bent, r.text)
            # point 7: timestamps that are digits only to str.isdigit, or absurdly long
            for stamp in ("\u00b2" * 10, "1" * 4301):
                r = http.get("/api/workflows", headers={**_signed("op-key", "GET", "/api/workflows"), "X-DW-Timestamp": stamp.encode()})
                assert r.status_code == 401 and "X-DW-Timestamp" in r.json()["message"], r.text
            # point 15: two identical requests in one second, told apart by their nonces
            ts = int(time.time())
            for nonce in ("poll-1", "poll-2"):
                r = http.get(f"/api/workflows/{wf}", headers=_signed("op-key", "GET", f"/api/workflows/{wf}", nonce=nonce, ts=ts))
                assert r.status_code == 200, r.text
            again = http.get(f"/api/workflows/{wf}", headers=_signed("op-key", "GET", f"/api/workflows/{wf}", nonce="poll-2", ts=ts))
            assert again.status_code == 401 and "already used" in again.json()["message"]
        assert server.stop() == 0
        server.start()  # point 4: the cache outlives the process
        with httpx.Client(base_url=server.url, timeout=30) as http:
            r = http.post(f"/api/workflows/{wf}/signal/go", content=signal_body, headers=signal)
            assert r.status_code == 401 and "already used" in r.json()["message"], r.text
            run_id = http.get(f"/api/workflows/{wf}", headers=_signed("op-key", "GET", f"/api/workflows/{wf}")).json()["run_id"]
            path = f"/api/workflows/{wf}/runs/{run_id}/history"
            events = http.get(path, headers=_signed("op-key", "GET", path))
            assert events.status_code == 200, events.text
            assert [e["event_type"] for e in events.json()["events"]].count("SignalReceived") == 1
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


def test_body_only_mode_warns_at_start(tmp_path: Path) -> None:
    """Point 11: the mode's hole is in the README's warning and in the start log."""
    server = ServerProcess(tmp_path / "data", env={"DW_AUTH_DRIVER": "signature", "DW_SIGNATURE_KEY": "k",
                                                   "DW_SIGNATURE_COMPAT": "body-only"}, port=ServerProcess.free_port())
    server.start()
    try:
        warning = re.compile(r"WARNING .*body-only.*empty body authenticates every request")
        wait_until(lambda: any(warning.search(line) for line in list(server.lines)), timeout=10,
                   what="the body-only warning in the start log")
    finally:
        server.stop()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "signature of an *empty* body authenticates every request" in readme


def _readme_block(language: str, after: str) -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    tail = readme[readme.index(after):]
    start = tail.index(f"```{language}\n") + len(language) + 4
    return tail[start:tail.index("```", start)]


def test_the_readme_signing_examples_work_twice_in_one_second(tmp_path: Path) -> None:
    """Point 15: the README's Python and openssl examples sign with a nonce; each runs twice at once."""
    server = ServerProcess(tmp_path / "data", env={"DW_AUTH_DRIVER": "signature", "DW_OPERATOR_SIGNATURE_KEY": "operator-key"},
                           port=ServerProcess.free_port())
    server.start()
    assert server.url is not None
    try:
        python = _readme_block("python", "**Signed requests.**").replace("http://127.0.0.1:8080", server.url)
        python = python.replace("httpx.post(", "answers.append(httpx.post(").rstrip() + ")\n"
        answers: list[httpx.Response] = []
        for _ in range(2):
            exec(compile(python, "README.md", "exec"), {"answers": answers})  # noqa: S102 - the README's own example
        assert [r.status_code for r in answers] == [201, 201], [r.text for r in answers]
        shell = _readme_block("sh", "In a shell, with `openssl`").replace("http://127.0.0.1:8080", server.url)
        outs = [subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=30) for _ in range(2)]
        for out in outs:
            assert '"outcome":"started_new"' in out.stdout.replace(" ", ""), (out.stdout, out.stderr)
    finally:
        server.stop()
