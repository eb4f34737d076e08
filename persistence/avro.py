"""The Avro ``durable_workflow.protocol.Value`` payload codec.

The server treats worker payloads as opaque blobs and returns them byte for byte.
It only needs this codec to accept CLI-style plain JSON inputs on the control plane
and to fill the decoded convenience fields (``input``, ``output``) of describe.
"""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

VALUE_SCHEMA: dict[str, Any] = json.loads(
    '{"type":"record","name":"Value","namespace":"durable_workflow.protocol",'
    '"fields":[{"name":"value","type":["null",'
    '{"type":"record","name":"BooleanValue","fields":[{"name":"boolean","type":"boolean"}]},'
    '{"type":"record","name":"LongValue","fields":[{"name":"long","type":"long"}]},'
    '{"type":"record","name":"DoubleValue","fields":[{"name":"double","type":"double"}]},'
    '{"type":"record","name":"BytesValue","fields":[{"name":"bytes","type":"bytes"}]},'
    '{"type":"record","name":"StringValue","fields":[{"name":"string","type":"string"}]},'
    '{"type":"record","name":"ArrayValue","fields":[{"name":"items",'
    '"type":{"type":"array","items":"Value"}}]},'
    '{"type":"record","name":"MapValue","fields":[{"name":"entries",'
    '"type":{"type":"map","values":"Value"}}]}]}]}'
)
VALUE_SCHEMA_JSON = json.dumps(VALUE_SCHEMA, separators=(",", ":"))  # the canonical text bundles embed
FINGERPRINT_HEX = "e2a33dff55802237"
MAGIC = b"\xc3\x01"
_PREFIX = MAGIC + bytes.fromhex(FINGERPRINT_HEX)
_SCHEMA = parse_schema(VALUE_SCHEMA)
_NS = "durable_workflow.protocol."
_INT64 = (-(2**63), 2**63 - 1)


class PayloadError(ValueError):
    """A value cannot be carried by the Value schema, or a blob is not one."""


def _to_datum(value: object) -> dict[str, Any]:
    if value is None:
        return {"value": None}
    if isinstance(value, bool):
        return {"value": (_NS + "BooleanValue", {"boolean": value})}
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise PayloadError("integers must fit in a signed 64-bit long")
        return {"value": (_NS + "LongValue", {"long": value})}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError("floats must be finite")
        return {"value": (_NS + "DoubleValue", {"double": value})}
    if isinstance(value, bytes):
        return {"value": (_NS + "BytesValue", {"bytes": value})}
    if isinstance(value, str):
        return {"value": (_NS + "StringValue", {"string": value})}
    if isinstance(value, list):
        return {"value": (_NS + "ArrayValue", {"items": [_to_datum(v) for v in value]})}
    if isinstance(value, dict):
        entries = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError("map keys must be strings")
            entries[key] = _to_datum(item)
        return {"value": (_NS + "MapValue", {"entries": entries})}
    raise PayloadError(f"unsupported value type {type(value).__name__}")


def _from_datum(datum: Any) -> Any:
    branch = datum["value"]
    if branch is None:
        return None
    for key in ("boolean", "long", "double", "bytes", "string"):
        if key in branch:
            return branch[key]
    if "items" in branch:
        return [_from_datum(v) for v in branch["items"]]
    if "entries" in branch:
        return {k: _from_datum(v) for k, v in branch["entries"].items()}
    raise PayloadError("unknown Value branch")


def encode(value: object) -> str:
    """Encode one JSON-like value as a base64 single-object blob."""
    buf = io.BytesIO()
    buf.write(_PREFIX)
    schemaless_writer(buf, _SCHEMA, _to_datum(value))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode(blob: str) -> Any:
    """Decode a base64 single-object blob; raises PayloadError when it is not one."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (ValueError, TypeError) as exc:
        raise PayloadError("blob is not valid base64") from exc
    if raw[:10] != _PREFIX:
        raise PayloadError("blob lacks the Avro single-object magic and Value fingerprint")
    buf = io.BytesIO(raw[10:])
    try:
        datum = schemaless_reader(buf, _SCHEMA, _SCHEMA)
    except Exception as exc:  # fastavro raises many kinds on truncated input
        raise PayloadError("malformed Avro Value datum") from exc
    if buf.read(1):
        raise PayloadError("trailing bytes after the Avro Value datum")
    return _from_datum(datum)


def envelope(value: object) -> dict[str, str]:
    return {"codec": "avro", "blob": encode(value)}


def decode_envelope(env: object) -> Any:
    """Best-effort decode of a stored envelope or bare blob for human-facing fields."""
    if env is None:
        return None
    blob = env.get("blob") if isinstance(env, dict) else env
    if not isinstance(blob, str):
        return None
    try:
        return decode(blob)
    except PayloadError:
        return None
