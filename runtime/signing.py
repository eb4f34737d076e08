"""Request signatures between nodes: HMAC-SHA256 over a canonical request, via ``cryptography``.

The signed string binds the method, the path with its query, a timestamp and the body's
SHA-256, so a captured request cannot be replayed against another route or after the
window closes. Verification is constant-time (``HMAC.verify``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

WINDOW_SECONDS = 300


@dataclass(frozen=True)
class Signed:
    timestamp: str
    signature: str


def canonical(method: str, path_and_query: str, timestamp: str, body: bytes) -> bytes:
    return "\n".join((method.upper(), path_and_query, timestamp, hashlib.sha256(body).hexdigest())).encode()


def sign(secret: bytes, method: str, path_and_query: str, body: bytes, now: float) -> Signed:
    timestamp = str(int(now))
    mac = HMAC(secret, hashes.SHA256())
    mac.update(canonical(method, path_and_query, timestamp, body))
    return Signed(timestamp, mac.finalize().hex())


def verify(
    secret: bytes, method: str, path_and_query: str, body: bytes, timestamp: str, signature: str, now: float
) -> str | None:
    """None when the signature holds; otherwise a reason an operator can act on."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return "the timestamp is not an integer"
    if abs(now - ts) > WINDOW_SECONDS:
        return f"the timestamp is more than {WINDOW_SECONDS} s away from this node's clock"
    try:
        expected = bytes.fromhex(signature)
    except (TypeError, ValueError):
        return "the signature is not hex"
    mac = HMAC(secret, hashes.SHA256())
    mac.update(canonical(method, path_and_query, timestamp, body))
    try:
        mac.verify(expected)
    except InvalidSignature:
        return "the signature does not match the request"
    return None
