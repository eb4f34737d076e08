"""Auth drivers without a server: tokens, canonical HMAC signatures, the body-only compat mode."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from api import signatures
from api.auth import Authenticator, Principal, authorize
from runtime.errors import ProtocolError
from runtime.replay_guard import ReplayCache

NOW = 1_800_000_000.0
KEYS = {"worker": "wk", "operator": "ok", "admin": "ak", "legacy": "lk"}


def sign(key: str, method: str, path: str, query: str, ns: str, ts: int, body: bytes) -> str:
    """What a client computes, written out independently of the server's helper."""
    pairs = sorted(p.split("=", 1) for p in query.split("&") if p)
    canonical_q = "&".join(f"{k}={v}" for k, v in pairs)
    text = "\n".join(["DW-HMAC-SHA256", method, path, canonical_q, ns, str(ts), hashlib.sha256(body).hexdigest()])
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def call(auth: Authenticator, *, key: str = "ok", method: str = "POST", path: str = "/api/workflows", query: str = "",
         ns: str = "", ts: float = NOW, body: bytes = b'{"a":1}', sent_path: str | None = None, sent_body: bytes | None = None,
         sent_query: str | None = None, signature: str | None = None) -> Principal:
    sig = signature if signature is not None else sign(key, method, path, query, ns, int(ts), body)
    headers = {"X-Signature": sig, "X-DW-Timestamp": str(int(ts))}
    if ns:
        headers["X-Namespace"] = ns
    return auth.authenticate(method=method, path=sent_path or path, query_string=query if sent_query is None else sent_query,
                             headers=headers, body=body if sent_body is None else sent_body)


def refused(fn, *args, **kw) -> str:
    with pytest.raises(ProtocolError) as err:
        fn(*args, **kw)
    assert err.value.status == 401 and err.value.reason == "unauthorized"
    return err.value.message


def test_canonical_signature_maps_keys_to_roles() -> None:
    auth = Authenticator("signature", keys=KEYS, clock=lambda: NOW)
    assert call(auth, key="wk") == Principal("worker", False)
    assert call(auth, key="ok", body=b"{}") == Principal("operator", False)
    assert call(auth, key="lk", body=b"[]") == Principal("admin", False)  # legacy with role keys: a plain admin
    only_legacy = Authenticator("signature", keys={"legacy": "lk"}, clock=lambda: NOW)
    assert call(only_legacy, key="lk") == Principal("admin", True)


def test_expired_and_tampered_requests_are_refused() -> None:
    auth = Authenticator("signature", keys=KEYS, clock=lambda: NOW)
    assert "expired" in refused(call, auth, ts=NOW - 301)
    assert "expired" in refused(call, auth, ts=NOW + 301)
    first = call(auth, ts=NOW - 299, query="page_size=2&a=b")  # inside the window, query order does not matter
    again = call(auth, ts=NOW - 299, query="a=b&page_size=2")
    assert first.replay_key is not None and first.replay_key == again.replay_key  # the pipeline refuses the second
    assert first.replay_expires_at == NOW - 299 + 2 * signatures.WINDOW_SECONDS
    assert refused(call, auth, body=b'{"a":1}', sent_body=b'{"a":2}') == "Invalid request signature."
    assert refused(call, auth, sent_path="/api/namespaces") == "Invalid request signature."
    assert refused(call, auth, query="status=running", sent_query="status=failed") == "Invalid request signature."
    assert refused(call, auth, ns="team-a", signature=sign("ok", "POST", "/api/workflows", "", "team-b", int(NOW), b'{"a":1}')) == "Invalid request signature."
    assert refused(call, auth, key="nope") == "Invalid request signature."
    assert "Missing request signature" in refused(auth.authenticate, method="GET", path="/", query_string="", headers={}, body=b"")
    assert "X-Signature" in refused(auth.authenticate, method="GET", path="/", query_string="", headers={"X-Signature": "ab"}, body=b"")


def test_only_the_exact_signature_form_is_accepted_and_replays_are_keyed_on_its_bytes() -> None:
    """bytes.fromhex skips whitespace: "ab cd…" used to pass as a fresh signature (issue 9, point 1)."""
    auth = Authenticator("signature", keys=KEYS, clock=lambda: NOW)
    sig = sign("ok", "POST", "/api/workflows", "", "", int(NOW), b'{"a":1}')
    original = call(auth, signature=sig)
    for bent in (sig[:2] + " " + sig[2:], sig[:4] + "\t" + sig[4:], " " + sig, sig + " ", sig + "\n", sig[:62], sig + "00",
                 "0x" + sig[2:], sig[:10] + "g" + sig[11:]):
        assert "exactly 64 hex digits" in refused(call, auth, signature=bent), repr(bent)
    upper = call(auth, signature=sig.upper())  # either case is the same 32 bytes: the same replay key
    assert upper.role == "operator" and upper.replay_key == original.replay_key == bytes.fromhex(sig)


@pytest.mark.parametrize("stamp", ["\u00b2", "1\u00b2", "\u0661\u0662", "9" * 4301, "1" * 13, "-5", "+5", " 5", "5 ", "1.5", ""])
def test_timestamps_are_plain_ascii_digits(stamp: str) -> None:
    """A superscript or Arabic-Indic digit passed str.isdigit() and then broke int(): a 500 without a credential."""
    auth = Authenticator("signature", keys=KEYS, clock=lambda: NOW)
    message = refused(auth.authenticate, method="GET", path="/", query_string="",
                      headers={"X-Signature": "ab" * 32, "X-DW-Timestamp": stamp}, body=b"")
    assert "X-DW-Timestamp" in message


def test_a_nonce_tells_two_identical_requests_of_one_second_apart() -> None:
    auth = Authenticator("signature", keys=KEYS, clock=lambda: NOW)

    def with_nonce(nonce: str, signed_nonce: str | None = None) -> Principal:
        text = "\n".join(["DW-HMAC-SHA256", "GET", "/api/workflows/x", "", "", str(int(NOW)), hashlib.sha256(b"").hexdigest(),
                          signed_nonce if signed_nonce is not None else nonce])
        sig = hmac.new(b"ok", text.encode(), hashlib.sha256).hexdigest()
        return auth.authenticate(method="GET", path="/api/workflows/x", query_string="", body=b"",
                                 headers={"X-Signature": sig, "X-DW-Timestamp": str(int(NOW)), "X-DW-Nonce": nonce})

    one, two = with_nonce("n-1"), with_nonce("n-2")
    assert one.role == two.role == "operator" and one.replay_key != two.replay_key
    assert refused(with_nonce, "n-3", "n-4") == "Invalid request signature."  # the nonce is signed
    assert "X-DW-Nonce" in refused(with_nonce, "bad nonce")
    assert "X-DW-Nonce" in refused(with_nonce, "x" * 129)
    plain = call(auth, method="GET", path="/api/workflows/x", body=b"")  # without a nonce: today's scheme
    assert plain.role == "operator"


def test_body_only_compat_mode_is_the_references_replayable_scheme() -> None:
    auth = Authenticator("signature", keys={"operator": "ok"}, compat="body-only")
    sig = hmac.new(b"ok", b"", hashlib.sha256).hexdigest()
    for _ in range(2):  # a signed GET is valid again and again: why it is not the default
        assert auth.authenticate(method="GET", path="/x", query_string="", headers={"X-Signature": sig}, body=b"").role == "operator"
    assert refused(auth.authenticate, method="GET", path="/x", query_string="", headers={"X-Signature": sig}, body=b"z")


def test_backward_compatibility_switch_and_missing_configuration() -> None:
    tokens = {"operator": "t-op", "legacy": "t-legacy"}
    on = Authenticator("token", tokens=tokens)
    assert on.authenticate(method="GET", path="/", query_string="", headers={"Authorization": "Bearer t-legacy"}, body=b"").role == "admin"
    off = Authenticator("token", tokens=tokens, backward_compatible=False)
    refused(off.authenticate, method="GET", path="/", query_string="", headers={"Authorization": "Bearer t-legacy"}, body=b"")
    for driver, message in (("token", "DW_AUTH_TOKEN"), ("signature", "DW_SIGNATURE_KEY")):
        with pytest.raises(ProtocolError) as err:
            Authenticator(driver).authenticate(method="GET", path="/", query_string="", headers={}, body=b"")
        assert err.value.status == 500 and message in err.value.message
    with pytest.raises(ProtocolError) as err:
        authorize(Principal("worker", False), ("operator", "admin"))
    assert err.value.status == 403 and err.value.extra["allowed_roles"] == ["operator", "admin"]


def test_replay_cache_forgets_after_the_window_and_stays_bounded() -> None:
    cache = ReplayCache(capacity=3)
    expiry = NOW + 2 * signatures.WINDOW_SECONDS
    assert not cache.seen(b"a", NOW, expiry) and cache.seen(b"a", NOW + 1, expiry)
    assert not cache.seen(b"a", expiry + 1, expiry + 600)  # expired: the timestamp check refuses it anyway
    for s in (b"b", b"c", b"d", b"e", b"f"):
        cache.seen(s, NOW, expiry)
    assert len(cache._seen) <= 3
