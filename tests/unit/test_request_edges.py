"""The edge of the request path, without sockets: JSON bodies and the body-size guard."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from api import json_body
from api.http_guard import REFUSAL, RequestGuard, framing_refusal
from runtime.errors import ProtocolError


def nested(levels: int) -> Any:
    value: Any = 1
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


def test_nesting_up_to_the_limit_is_accepted_and_one_more_is_refused() -> None:
    assert json_body.parse(json.dumps(nested(64)).encode(), 64) == nested(64)
    with pytest.raises(ProtocolError) as err:
        json_body.parse(json.dumps(nested(65)).encode(), 64)
    assert (err.value.status, err.value.reason, err.value.extra["limit"]) == (422, "payload_too_deep", 64)
    # brackets inside strings are text, not nesting
    assert json_body.parse(json.dumps({"s": "[" * 500}).encode(), 64) == {"s": "[" * 500}
    # wide is not deep
    assert len(json_body.parse(json.dumps([[1]] * 5000).encode(), 64)) == 5000


def test_depth_counts_the_deepest_branch() -> None:
    assert json_body.depth(1, 10) == 0
    assert json_body.depth({"a": [1, {"b": []}], "c": {}}, 10) == 4
    assert json_body.depth(nested(500), 10) == 11  # stops counting past the limit


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1E999", "123456789e305"])
def test_numbers_that_are_not_finite_are_refused(number: str) -> None:
    with pytest.raises(ProtocolError) as err:
        json_body.parse(f'{{"memo": {{"x": {number}}}}}'.encode())
    assert (err.value.status, err.value.reason) == (422, "non_finite_number")


def test_large_but_finite_numbers_and_big_integers_pass() -> None:
    assert json_body.parse(b'{"x": 1.7e308, "y": -2.5e-300, "z": 123456789012345678901234567890}') == {
        "x": 1.7e308, "y": -2.5e-300, "z": 123456789012345678901234567890
    }


@pytest.mark.parametrize("raw", [b'{"x": NaN}', b'{"x": Infinity}', b"[" * 5000 + b"]" * 5000, b'{"x": 1', b"\xff"])
def test_what_is_not_json_is_malformed(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        json_body.parse(raw)
    assert (err.value.status, err.value.reason) == (400, "malformed_json")


def test_framing_refusals_judged_on_headers() -> None:
    assert framing_refusal([(b"content-length", b"5"), (b"transfer-encoding", b"chunked")], 100) == "conflicting_framing"
    assert framing_refusal([(b"Content-Length", b"101")], 100) == "too_large"
    assert framing_refusal([(b"content-length", b"100")], 100) is None
    assert framing_refusal([(b"transfer-encoding", b"chunked")], 100) is None  # counted as it streams


async def _drive(headers: list[tuple[bytes, bytes]], chunks: list[bytes], limit: int) -> tuple[dict[str, Any], bytes, int]:
    """Run the guard over a fake app that reads the whole body; how many chunks were pulled."""
    pulled = 0
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return messages[pulled - 1]

    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.update(scope=scope, body=body)

    scope = {"type": "http", "path": "/api/x", "headers": headers}
    await RequestGuard(app, lambda path: limit)(scope, receive, None)
    return seen["scope"], seen["body"], pulled


async def test_a_streamed_body_stops_being_read_at_the_limit() -> None:
    scope, body, pulled = await _drive([(b"transfer-encoding", b"chunked")], [b"x" * 40] * 1000, 100)
    assert scope[REFUSAL] == "too_large" and pulled == 3 and len(body) <= 100
    scope, body, pulled = await _drive([(b"transfer-encoding", b"chunked")], [b"x" * 40] * 2, 100)
    assert REFUSAL not in scope and body == b"x" * 80 and pulled == 2


async def test_a_refused_request_is_not_read_at_all() -> None:
    for headers in ([(b"content-length", b"1000")], [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]):
        with trio.fail_after(1):
            scope, body, pulled = await _drive(headers, [b"x" * 1000], 100)
        assert scope[REFUSAL] and body == b"" and pulled == 0
