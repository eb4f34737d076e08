"""Request signatures between nodes: HMAC-SHA256 over a canonical request, via ``cryptography``.

The signed string binds the method, the path with its query (as sent, percent-encoding
included), a timestamp, the body's SHA-256 (hex; the sender declares it in a header, so the
receiver can check the signature before reading the body) and the *audience*: the receiving node's id and
incarnation (its start time). So a captured request cannot be replayed against another
route, another node, the same node after a restart, or after the window closes; within the
window the receiver remembers what it accepted (``Peers.check``). Verification is
constant-time (``HMAC.verify``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

WINDOW_SECONDS = 300
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Signed:
    timestamp: str
    signature: str


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical(method: str, path_and_query: str, timestamp: str, digest: str, audience: str = "") -> bytes:
    return "\n".join((method.upper(), path_and_query, timestamp, digest, audience)).encode()


def sign(secret: bytes, method: str, path_and_query: str, digest: str, now: float, audience: str = "") -> Signed:
    """Sign a request whose body has the SHA-256 ``digest`` (hex, ``body_digest``)."""
    timestamp = str(int(now))
    mac = HMAC(secret, hashes.SHA256())
    mac.update(canonical(method, path_and_query, timestamp, digest, audience))
    return Signed(timestamp, mac.finalize().hex())


def verify(
    secret: bytes, method: str, path_and_query: str, digest: str, timestamp: str, signature: str, now: float,
    audience: str = "",
) -> str | None:
    """None when the signature holds for a body of SHA-256 ``digest``; otherwise a reason an operator can act on."""
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        return "the declared body digest is not 64 lower-case hex digits"
    if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp):
        return "the timestamp is not an integer"
    if abs(now - int(timestamp)) > WINDOW_SECONDS:
        return f"the timestamp is more than {WINDOW_SECONDS} s away from this node's clock"
    if not isinstance(signature, str) or not _HEX64.fullmatch(signature):
        return "the signature is not 64 lower-case hex digits"
    mac = HMAC(secret, hashes.SHA256())
    mac.update(canonical(method, path_and_query, timestamp, digest, audience))
    try:
        mac.verify(bytes.fromhex(signature))
    except InvalidSignature:
        return "the signature does not match the request (or was made for another node or an earlier start of this one)"
    return None
