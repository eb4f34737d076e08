"""Node-to-node signatures: bound to the request, the receiving node and its start; accepted once."""

from __future__ import annotations

import hashlib
import hmac

from runtime.peers import FORWARDED_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, Peers
from runtime.signing import WINDOW_SECONDS, body_digest, sign, verify

KEY = b"cluster-secret"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def test_signature_matches_stdlib_hmac_over_the_canonical_request() -> None:
    signed = sign(KEY, "post", "/internal/runs/x?y=1", body_digest(b"{}"), NOW, "node-2@1.000000")
    text = f"POST\n/internal/runs/x?y=1\n{int(NOW)}\n{hashlib.sha256(b'{}').hexdigest()}\nnode-2@1.000000".encode()
    assert signed.signature == hmac.new(KEY, text, hashlib.sha256).hexdigest()
    assert verify(KEY, "POST", "/internal/runs/x?y=1", body_digest(b"{}"), signed.timestamp, signed.signature, NOW,
                  "node-2@1.000000") is None


def test_tampering_or_staleness_is_rejected() -> None:
    b, x = body_digest(b"body"), body_digest(b"bodx")
    s = sign(KEY, "POST", "/a", b, NOW)
    assert verify(KEY, "POST", "/a", b, s.timestamp, s.signature, NOW) is None
    assert verify(KEY, "POST", "/a", x, s.timestamp, s.signature, NOW) is not None
    assert verify(KEY, "POST", "/b", b, s.timestamp, s.signature, NOW) is not None
    assert verify(KEY, "GET", "/a", b, s.timestamp, s.signature, NOW) is not None
    assert verify(b"other", "POST", "/a", b, s.timestamp, s.signature, NOW) is not None
    assert verify(KEY, "POST", "/a", b, s.timestamp, s.signature, NOW + WINDOW_SECONDS + 1) is not None
    assert verify(KEY, "POST", "/a", b, "soon", s.signature, NOW) == "the timestamp is not an integer"
    assert verify(KEY, "POST", "/a", b, "\u00b2", s.signature, NOW) == "the timestamp is not an integer"
    assert verify(KEY, "POST", "/a", b, s.timestamp, "zz", NOW) is not None
    assert verify(KEY, "POST", "/a", b, s.timestamp, s.signature[:2] + " " + s.signature[2:], NOW) is not None
    assert verify(KEY, "POST", "/a", b + " ", s.timestamp, s.signature, NOW) is not None


def _peers(node: str, started: float, clock: Clock) -> Peers:
    peers = Peers(node, KEY, clock, started)

    class Row:
        def __init__(self, node_id: str, url: str, started_at: float) -> None:
            self.node_id, self.advertise_url, self.started_at = node_id, url, started_at

    peers.set_directory([Row("n1", "http://n1", 10.0), Row("n2", "http://n2", 20.0)])
    return peers


def test_a_node_call_is_accepted_once_by_its_own_node_and_start_only() -> None:
    """A captured call delivered again was three signals (issue 9, point 4): now it is refused."""
    clock = Clock()
    n1, n2 = _peers("n1", 10.0, clock), _peers("n2", 20.0, clock)
    n2_restarted, n3 = _peers("n2", 21.0, clock), _peers("n3", 30.0, clock)
    headers = n1.signed_headers("POST", "/internal/rpc", b"call", "http://n2")
    assert n2.check("POST", "/internal/rpc", b"call", headers) is None
    assert "replay" in (n2.check("POST", "/internal/rpc", b"call", headers) or "")
    assert n3.check("POST", "/internal/rpc", b"call", headers) is not None  # meant for another node
    assert n2_restarted.check("POST", "/internal/rpc", b"call", headers) is not None  # for an earlier start
    fresh = n1.signed_headers("POST", "/internal/rpc", b"another call", "http://n2")
    assert n2.check_headers("POST", "/internal/rpc", fresh) is None  # a member's call, known before the body
    assert n2.check_body(b"other", fresh) is not None  # … and the body must be the signed one


def test_only_a_verified_peer_marks_a_request_forwarded() -> None:
    clock = Clock()
    n1, n2 = _peers("n1", 10.0, clock), _peers("n2", 20.0, clock)
    assert n2.forwarded_by("GET", "/api/x", b"", {FORWARDED_HEADER: "n1"}) is None
    forged = {FORWARDED_HEADER: "n1", TIMESTAMP_HEADER: str(int(NOW)), SIGNATURE_HEADER: "00" * 32}
    assert n2.forwarded_by("GET", "/api/x", b"", forged) is None
    real = n1.signed_headers("GET", "/api/x%3Fy=1", b"", "http://n2")
    assert n2.forwarded_by("GET", "/api/x?y=1", b"", real) is None  # the raw path is what is signed
    assert n2.forwarded_by("GET", "/api/x%3Fy=1", b"", real) == "n1"
