"""The Avro ``durable_workflow.protocol.Value`` codec (worker-plane spec 4.1)."""

from __future__ import annotations

import base64
import math
from typing import Any

import pytest

from persistence import avro
from persistence.avro import PayloadError

# (value, blob) pairs from the spec, verified byte-identical to the SDK encoder
SPEC_EXAMPLES = [
    (["Ada"], "wwHioz3/VYAiNwwCCgZBZGEA"),
    ("Hello, Ada!", "wwHioz3/VYAiNwoWSGVsbG8sIEFkYSE="),
    ([], "wwHioz3/VYAiNwwA"),
    (None, "wwHioz3/VYAiNwA="),
    ({"ok": True, "n": 3}, "wwHioz3/VYAiNw4EBG9rAgECbgQGAA=="),
]
PREFIX = bytes.fromhex("c301e2a33dff55802237")


def raw(blob: str) -> bytes:
    return base64.b64decode(blob)


def blob_of(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize(("value", "blob"), SPEC_EXAMPLES, ids=["list", "string", "empty-list", "null", "map"])
def test_spec_examples_encode_byte_exact(value: Any, blob: str) -> None:
    assert avro.encode(value) == blob


@pytest.mark.parametrize(("value", "blob"), SPEC_EXAMPLES, ids=["list", "string", "empty-list", "null", "map"])
def test_spec_examples_decode(value: Any, blob: str) -> None:
    assert avro.decode(blob) == value


def test_every_blob_starts_with_magic_and_fingerprint() -> None:
    assert raw(avro.encode(1))[:10] == PREFIX
    assert avro.FINGERPRINT_HEX == "e2a33dff55802237"


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        1.5,
        -0.0,
        b"\x00\xff",
        "",
        "ünïcødé ✓",
        [1, "two", None, [3.0, {"k": False}]],
        {},
        {"nested": {"list": [1, 2, 3], "empty": {}}},
    ],
)
def test_round_trip(value: Any) -> None:
    decoded = avro.decode(avro.encode(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_bool_is_not_encoded_as_long() -> None:
    # union index 1 (BooleanValue) zig-zags to 0x02, index 2 (LongValue) to 0x04
    assert raw(avro.encode(True))[10:] == b"\x02\x01"
    assert raw(avro.encode(1))[10:] == b"\x04\x02"


def test_envelope_helpers() -> None:
    env = avro.envelope(["Ada"])
    assert env == {"codec": "avro", "blob": "wwHioz3/VYAiNwwCCgZBZGEA"}
    assert avro.decode_envelope(env) == ["Ada"]
    assert avro.decode_envelope("wwHioz3/VYAiNwwA") == []
    assert avro.decode_envelope(None) is None
    assert avro.decode_envelope({"codec": "avro", "external_storage": {}}) is None
    assert avro.decode_envelope({"codec": "avro", "blob": "not base64!"}) is None


def test_decoder_accepts_multi_block_and_negative_count_arrays() -> None:
    # ArrayValue (index 6 -> 0x0c); blocks: [1 item "a"], [count -1 with byte size 3, item "b"], end 0
    item_a = b"\x0a\x02a"  # StringValue "a"
    item_b = b"\x0a\x02b"
    datum = b"\x0c" + b"\x02" + item_a + b"\x01" + b"\x06" + item_b + b"\x00"
    assert avro.decode(blob_of(PREFIX + datum)) == ["a", "b"]


@pytest.mark.parametrize(
    "blob",
    ["not base64!", "wwHioz3/VYAiNwA", "wwHi oz3/VYAiNwA=", "", 42, None],
    ids=["garbage", "bad-padding", "whitespace", "empty", "int", "none"],
)
def test_decode_rejects_bad_base64(blob: Any) -> None:
    with pytest.raises(PayloadError):
        avro.decode(blob)


def test_decode_rejects_wrong_magic() -> None:
    data = raw("wwHioz3/VYAiNwA=")
    with pytest.raises(PayloadError, match="magic"):
        avro.decode(blob_of(b"\xc3\x02" + data[2:]))


def test_decode_rejects_wrong_fingerprint() -> None:
    data = bytearray(raw("wwHioz3/VYAiNwA="))
    data[5] ^= 0xFF
    with pytest.raises(PayloadError, match="fingerprint"):
        avro.decode(blob_of(bytes(data)))


def test_decode_rejects_trailing_bytes() -> None:
    with pytest.raises(PayloadError, match="trailing"):
        avro.decode(blob_of(raw("wwHioz3/VYAiNwA=") + b"\x00"))


@pytest.mark.parametrize(
    "datum",
    [b"", b"\x0a\x0cshort", b"\x10", b"\x0c\x02"],
    ids=["missing-datum", "truncated-string", "bad-union-index", "truncated-array"],
)
def test_decode_rejects_malformed_datum(datum: bytes) -> None:
    with pytest.raises(PayloadError):
        avro.decode(blob_of(PREFIX + datum))


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, [1, 2**64], {"n": 10**30}])
def test_encode_rejects_int64_overflow(value: Any) -> None:
    with pytest.raises(PayloadError, match="64-bit"):
        avro.encode(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [math.nan]])
def test_encode_rejects_non_finite_floats(value: Any) -> None:
    with pytest.raises(PayloadError, match="finite"):
        avro.encode(value)


@pytest.mark.parametrize("value", [{1: "x"}, (1, 2), {1, 2}, object()], ids=["int-key", "tuple", "set", "object"])
def test_encode_rejects_unsupported_values(value: Any) -> None:
    with pytest.raises(PayloadError):
        avro.encode(value)
