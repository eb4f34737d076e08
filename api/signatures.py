"""HMAC request signatures for the ``signature`` auth driver, checked with ``cryptography``.

The reference signs only the body (``X-Signature = hex HMAC-SHA256(key, body)``), so a signed
GET is valid forever and any captured request can be replayed. That scheme is kept only behind
``DW_SIGNATURE_COMPAT=body-only``. The default signs a canonical description of the request::

    DW-HMAC-SHA256
    <METHOD>
    <path, percent-decoded (as routed)>
    <query: pairs sorted by name then value, each name=value percent-encoded, joined by &>
    <X-Namespace header, or empty>
    <X-DW-Timestamp: unix seconds>
    <hex SHA-256 of the body>
    <X-DW-Nonce header>            (only when the client sends one)

and the server refuses a timestamp more than five minutes away from its clock and a
signature it has already accepted within that window (the replay cache), so a captured
request is useless to anyone but its sender, and only once. A client that sends the same
request twice within a second (a describe polled in a loop) adds a nonce, so the two differ.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

SCHEME = "DW-HMAC-SHA256"
WINDOW_SECONDS = 300
TIMESTAMP_HEADER = "X-DW-Timestamp"
SIGNATURE_HEADER = "X-Signature"
NONCE_HEADER = "X-DW-Nonce"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[A-Za-z0-9._~-]{1,128}")


class SignatureError(Exception):
    """Why a signature was refused, in words a client developer can act on."""


def canonical_query(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True)
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs))


def canonical_request(
    method: str, path: str, query_string: str, namespace: str, timestamp: str, body: bytes, nonce: str | None = None
) -> bytes:
    lines = [SCHEME, method.upper(), path, canonical_query(query_string), namespace, timestamp, hashlib.sha256(body).hexdigest()]
    if nonce is not None:
        lines.append(nonce)  # optional: two identical requests in one second differ by it
    return "\n".join(lines).encode()


def hmac_hex(key: bytes, message: bytes) -> str:
    mac = HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac.finalize().hex()


def decode_signature(presented: str) -> bytes | None:
    """The 32 signature bytes, or None unless ``presented`` is exactly 64 hex digits.

    ``bytes.fromhex`` skips whitespace, so "ab cd…" and "abcd…" would decode alike while the
    text differs: a replay check keyed on the text could be walked around with spaces. Only the
    exact form is accepted, and replays are recognised by these bytes, not by the text."""
    if not _HEX64.fullmatch(presented):
        return None
    return bytes.fromhex(presented)


def _matches(key: bytes, message: bytes, raw: bytes) -> bool:
    mac = HMAC(key, hashes.SHA256())
    mac.update(message)
    try:
        mac.verify(raw)  # constant time
    except InvalidSignature:
        return False
    return True


def _decoded(signature: str | None) -> bytes:
    if not signature:
        raise SignatureError("Missing request signature.")
    raw = decode_signature(signature)
    if raw is None:
        raise SignatureError(f"Malformed {SIGNATURE_HEADER} header: send the HMAC-SHA256 as exactly 64 hex digits.")
    return raw


@dataclass(frozen=True)
class Verified:
    """A request whose signature holds: the key that signed it, and what marks it as used.

    ``replay_key`` is the signature's bytes; the caller records it until ``expires_at`` and
    refuses it a second time (``runtime.replay_guard``), across the cluster and restarts."""

    key_name: str
    replay_key: bytes
    expires_at: float


def parse_timestamp(timestamp: str | None) -> int:
    """Unix seconds as plain ASCII digits (``str.isdigit`` admits "²" and ``int`` thousands of digits)."""
    if not timestamp or not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError(f"Missing or malformed {TIMESTAMP_HEADER} header: send the signing time as unix seconds.")
    return int(timestamp)


def verify_canonical(
    keys: Iterable[tuple[str, bytes]],
    *,
    method: str,
    path: str,
    query_string: str,
    namespace: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    nonce: str | None = None,
) -> Verified:
    """Which key signed the request; SignatureError otherwise. The replay check is the caller's."""
    raw = _decoded(signature)
    signed_at = parse_timestamp(timestamp)
    if abs(now - signed_at) > WINDOW_SECONDS:
        raise SignatureError(
            f"Request signature has expired: {TIMESTAMP_HEADER} is more than {WINDOW_SECONDS} s from the server's clock."
        )
    if nonce is not None and not _NONCE.fullmatch(nonce):
        raise SignatureError(f"Malformed {NONCE_HEADER} header: use 1 to 128 characters of A-Z a-z 0-9 . _ ~ -.")
    assert timestamp is not None
    message = canonical_request(method, path, query_string, namespace, timestamp, body, nonce)
    for name, key in keys:
        if _matches(key, message, raw):
            return Verified(name, raw, signed_at + 2 * WINDOW_SECONDS)
    raise SignatureError("Invalid request signature.")


def verify_body_only(keys: Iterable[tuple[str, bytes]], signature: str | None, body: bytes) -> str:
    """The reference's scheme (DW_SIGNATURE_COMPAT=body-only): replayable, kept for old clients."""
    raw = _decoded(signature)
    for name, key in keys:
        if _matches(key, body, raw):
            return name
    raise SignatureError("Invalid request signature.")
