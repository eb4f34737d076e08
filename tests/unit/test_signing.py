from __future__ import annotations

import hashlib
import hmac

from runtime.signing import WINDOW_SECONDS, sign, verify

KEY = b"cluster-secret"
NOW = 1_800_000_000.0


def test_signature_matches_stdlib_hmac_over_the_canonical_request() -> None:
    signed = sign(KEY, "post", "/internal/runs/x?y=1", b"{}", NOW)
    text = f"POST\n/internal/runs/x?y=1\n{int(NOW)}\n{hashlib.sha256(b'{}').hexdigest()}".encode()
    assert signed.signature == hmac.new(KEY, text, hashlib.sha256).hexdigest()
    assert verify(KEY, "POST", "/internal/runs/x?y=1", b"{}", signed.timestamp, signed.signature, NOW) is None


def test_tampering_or_staleness_is_rejected() -> None:
    s = sign(KEY, "POST", "/a", b"body", NOW)
    assert verify(KEY, "POST", "/a", b"bodx", s.timestamp, s.signature, NOW) is not None
    assert verify(KEY, "POST", "/b", b"body", s.timestamp, s.signature, NOW) is not None
    assert verify(KEY, "GET", "/a", b"body", s.timestamp, s.signature, NOW) is not None
    assert verify(b"other", "POST", "/a", b"body", s.timestamp, s.signature, NOW) is not None
    assert verify(KEY, "POST", "/a", b"body", s.timestamp, s.signature, NOW + WINDOW_SECONDS + 1) is not None
    assert verify(KEY, "POST", "/a", b"body", "soon", s.signature, NOW) == "the timestamp is not an integer"
    assert verify(KEY, "POST", "/a", b"body", s.timestamp, "zz", NOW) == "the signature is not hex"
