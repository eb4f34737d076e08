"""HMAC request signatures for the ``signature`` auth driver, checked with ``cryptography``.

The reference signs only the body (``X-Signature = hex HMAC-SHA256(key, body)``), so a signed
GET is valid forever and any captured request can be replayed. That scheme is kept only behind
``DW_SIGNATURE_COMPAT=body-only``. The default signs a canonical description of the request::

    DW-HMAC-SHA256
    <METHOD>
    <path, as sent>
    <query: pairs sorted by name then value, each name=value percent-encoded, joined by &>
    <X-Namespace header, or empty>
    <X-DW-Timestamp: unix seconds>
    <hex SHA-256 of the body>

and the server refuses a timestamp more than five minutes away from its clock and a
signature it has already accepted within that window (the replay cache), so a captured
request is useless to anyone but its sender, and only once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

SCHEME = "DW-HMAC-SHA256"
WINDOW_SECONDS = 300
TIMESTAMP_HEADER = "X-DW-Timestamp"
SIGNATURE_HEADER = "X-Signature"


class SignatureError(Exception):
    """Why a signature was refused, in words a client developer can act on."""


def canonical_query(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True)
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs))


def canonical_request(method: str, path: str, query_string: str, namespace: str, timestamp: str, body: bytes) -> bytes:
    lines = (SCHEME, method.upper(), path, canonical_query(query_string), namespace, timestamp, hashlib.sha256(body).hexdigest())
    return "\n".join(lines).encode()


def hmac_hex(key: bytes, message: bytes) -> str:
    mac = HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac.finalize().hex()


def _matches(key: bytes, message: bytes, presented: str) -> bool:
    try:
        raw = bytes.fromhex(presented)
    except ValueError:
        return False
    if presented != presented.lower():
        return False  # lower-case hex only, as the reference compares strings
    mac = HMAC(key, hashes.SHA256())
    mac.update(message)
    try:
        mac.verify(raw)  # constant time
    except InvalidSignature:
        return False
    return True


class ReplayCache:
    """Signatures accepted within the window; bounded, oldest forgotten first."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen(self, signature: str, now: float) -> bool:
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self.capacity:
                break
            del self._seen[oldest]
        if signature in self._seen:
            return True
        self._seen[signature] = now + 2 * WINDOW_SECONDS
        return False


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
    replay: ReplayCache,
) -> str:
    """The name of the key that signed the request; SignatureError otherwise."""
    if not signature:
        raise SignatureError("Missing request signature.")
    if not timestamp or not timestamp.isdigit():
        raise SignatureError(f"Missing or malformed {TIMESTAMP_HEADER} header: send the signing time as unix seconds.")
    if abs(now - int(timestamp)) > WINDOW_SECONDS:
        raise SignatureError(
            f"Request signature has expired: {TIMESTAMP_HEADER} is more than {WINDOW_SECONDS} s from the server's clock."
        )
    message = canonical_request(method, path, query_string, namespace, timestamp, body)
    for name, key in keys:
        if _matches(key, message, signature):
            if replay.seen(signature, now):
                raise SignatureError("Request signature was already used; sign every request afresh.")
            return name
    raise SignatureError("Invalid request signature.")


def verify_body_only(keys: Iterable[tuple[str, bytes]], signature: str | None, body: bytes) -> str:
    """The reference's scheme (DW_SIGNATURE_COMPAT=body-only): replayable, kept for old clients."""
    if not signature:
        raise SignatureError("Missing request signature.")
    for name, key in keys:
        if _matches(key, body, signature):
            return name
    raise SignatureError("Invalid request signature.")
