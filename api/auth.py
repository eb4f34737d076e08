"""Authentication drivers and the role check (control-plane spec 1.4-1.5).

``none`` makes every caller an admin with full access. ``token`` compares bearer tokens,
``signature`` checks HMAC request signatures (``api.signatures``; whether a signature was
already used is the pipeline's question, asked of the cluster-wide ``ReplayGuard``); both try the role
credentials (worker, operator, admin) first and then, while ``DW_AUTH_BACKWARD_COMPATIBLE``
holds, the legacy shared one, which has full access only when no role credential exists.
Every comparison is constant-time.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from runtime.errors import ProtocolError

from . import signatures

ROLES = ("worker", "operator", "admin")
SUPPORTED_DRIVERS = ("none", "token", "signature")


@dataclass(frozen=True)
class Principal:
    role: str
    full_access: bool
    # A signed request's signature bytes and when they may be forgotten: the pipeline records
    # them once (runtime.replay_guard) and refuses a second use anywhere in the cluster.
    replay_key: bytes | None = field(default=None, compare=False)
    replay_expires_at: float = field(default=0.0, compare=False)


def _unauthorized(message: str) -> ProtocolError:
    return ProtocolError(401, "unauthorized", message)


class Authenticator:
    def __init__(
        self,
        driver: str,
        tokens: Mapping[str, str] | None = None,
        keys: Mapping[str, str] | None = None,
        *,
        backward_compatible: bool = True,
        compat: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.driver = driver
        self.tokens = {k: v for k, v in (tokens or {}).items() if v}
        self.keys = {k: v.encode() for k, v in (keys or {}).items() if v}
        self.backward_compatible = backward_compatible
        self.compat = compat
        self.clock = clock

    def configured(self) -> bool:
        """Is there a credential the driver can check (ready/health reporting)?"""
        if self.driver == "none":
            return True
        creds = self.tokens if self.driver == "token" else self.keys
        return any(r in creds for r in ROLES) or (self.backward_compatible and "legacy" in creds)

    def _candidates(self, creds: Mapping[str, object]) -> tuple[list[str], bool]:
        roles = [r for r in ROLES if r in creds]
        legacy = self.backward_compatible and "legacy" in creds
        return roles + (["legacy"] if legacy else []), not roles

    def _principal(self, name: str, legacy_full: bool) -> Principal:
        return Principal("admin", legacy_full) if name == "legacy" else Principal(name, False)

    def authenticate(
        self, *, method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes
    ) -> Principal:
        if self.driver == "none":
            return Principal("admin", True)
        if self.driver == "token":
            return self._token(headers.get("Authorization"))
        if self.driver == "signature":
            return self._signature(method, path, query_string, headers, body)
        raise ProtocolError(500, "server_error", f"Unknown auth driver: {self.driver}")

    def _token(self, authorization: str | None) -> Principal:
        names, legacy_full = self._candidates(self.tokens)
        if not names:
            raise ProtocolError(500, "server_error", 'Auth driver is set to "token" but DW_AUTH_TOKEN is not configured.')
        presented = ""
        if authorization and authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        if not presented:
            raise _unauthorized("Invalid or missing authentication token.")
        for name in names:
            if hmac.compare_digest(presented.encode(), self.tokens[name].encode()):
                return self._principal(name, legacy_full)
        raise _unauthorized("Invalid or missing authentication token.")

    def _signature(self, method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes) -> Principal:
        names, legacy_full = self._candidates(self.keys)
        if not names:
            raise ProtocolError(500, "server_error", 'Auth driver is set to "signature" but DW_SIGNATURE_KEY is not configured.')
        keys = [(n, self.keys[n]) for n in names]
        presented = headers.get(signatures.SIGNATURE_HEADER)
        try:
            if self.compat == "body-only":
                return self._principal(signatures.verify_body_only(keys, presented, body), legacy_full)
            verified = signatures.verify_canonical(
                keys, method=method, path=path, query_string=query_string,
                namespace=headers.get("X-Namespace") or "", timestamp=headers.get(signatures.TIMESTAMP_HEADER),
                signature=presented, body=body, now=self.clock(), nonce=headers.get(signatures.NONCE_HEADER),
            )
        except signatures.SignatureError as exc:
            raise _unauthorized(str(exc)) from None
        principal = self._principal(verified.key_name, legacy_full)
        return Principal(principal.role, principal.full_access, verified.replay_key, verified.expires_at)


def authorize(principal: Principal, allowed: tuple[str, ...]) -> None:
    if principal.full_access or principal.role in allowed:
        return
    raise ProtocolError(
        403,
        "forbidden",
        "Authenticated role is not allowed to access this endpoint.",
        role=principal.role,
        allowed_roles=list(allowed),
    )
