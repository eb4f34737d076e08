"""The shape of an external payload reference (extended spec §13.3), checked wherever an
envelope is accepted: a reference is stored and handed back verbatim, so a malformed one must
be refused on the way in, not discovered by the worker that cannot resolve it."""

from __future__ import annotations

import re
from typing import Any

SCHEMA = "durable-workflow.v2.external-payload-reference.v1"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_URI = 2048


def problem(ref: Any) -> str | None:
    """What is wrong with an ``external_storage`` reference, or None when it is well formed."""
    if not isinstance(ref, dict):
        return "external_storage must be an object"
    if ref.get("schema") != SCHEMA:
        return f"external_storage.schema must be {SCHEMA}"
    uri = ref.get("uri")
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI:
        return f"external_storage.uri must be a non-empty string of at most {MAX_URI} characters"
    if not isinstance(ref.get("sha256"), str) or not _SHA256.match(ref["sha256"]):
        return "external_storage.sha256 must be 64 hexadecimal characters"
    size = ref.get("size_bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "external_storage.size_bytes must be a non-negative integer"
    if ref.get("codec") != "avro":
        return "external_storage.codec must be avro"
    if "expires_at" in ref and (not isinstance(ref["expires_at"], str) or not ref["expires_at"]):
        return "external_storage.expires_at must be a non-empty timestamp string"
    return None


RUNTIME_SCHEMA = "durable-workflow.v2.runtime-external-payload-reference.v1"
_RUNTIME_ID = re.compile(r"^ep_[0-9A-HJKMNP-TV-Z]{26}$")
_LOWER_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def runtime_problem(ref: Any) -> str | None:
    """What is wrong with a runtime (server-stored) reference: exactly five keys (§13.3)."""
    if not isinstance(ref, dict) or set(ref) != {"schema", "reference_id", "codec", "size_bytes", "sha256"}:
        return "external_payload must hold exactly schema, reference_id, codec, size_bytes and sha256"
    if ref["schema"] != RUNTIME_SCHEMA:
        return f"external_payload.schema must be {RUNTIME_SCHEMA}"
    if not isinstance(ref["reference_id"], str) or not _RUNTIME_ID.match(ref["reference_id"]):
        return "external_payload.reference_id must be ep_ and 26 Crockford base32 characters"
    if ref["codec"] != "avro":
        return "external_payload.codec must be avro"
    if not isinstance(ref["size_bytes"], int) or isinstance(ref["size_bytes"], bool) or ref["size_bytes"] < 0:
        return "external_payload.size_bytes must be a non-negative integer"
    if not isinstance(ref["sha256"], str) or not _LOWER_SHA256.match(ref["sha256"]):
        return "external_payload.sha256 must be 64 lowercase hexadecimal characters"
    return None


def envelope_problem(value: dict[str, Any]) -> str | None:
    """For an envelope without a blob: a well-formed direct or runtime reference, or why not."""
    if "external_payload" in value:
        return runtime_problem(value["external_payload"])
    if "external_storage" not in value:
        return None
    return problem(value["external_storage"])
