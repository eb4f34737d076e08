"""Authentication drivers and the role check (control-plane spec 1.4-1.5).

``none`` makes every caller an admin with full access. ``token`` compares bearer
tokens in constant time against the role tokens (worker, operator, admin) and the
legacy shared token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from runtime.errors import ProtocolError

ROLES = ("worker", "operator", "admin")


@dataclass(frozen=True)
class Principal:
    role: str
    full_access: bool


SUPPORTED_DRIVERS = ("none", "token")


def authenticate(driver: str, tokens: dict[str, str], authorization: str | None) -> Principal:
    if driver == "none":
        return Principal("admin", True)
    if driver != "token":
        raise ProtocolError(500, "server_error", f"Unknown auth driver: {driver}")
    role_tokens = {r: tokens[r] for r in ROLES if tokens.get(r)}
    legacy = tokens.get("legacy")
    if not role_tokens and not legacy:
        raise ProtocolError(500, "server_error", 'Auth driver is set to "token" but DW_AUTH_TOKEN is not configured.')
    presented = ""
    if authorization and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip()
    if not presented:
        raise ProtocolError(401, "unauthorized", "Invalid or missing authentication token.")
    for role, token in role_tokens.items():
        if hmac.compare_digest(presented.encode(), token.encode()):
            return Principal(role, False)
    if legacy and hmac.compare_digest(presented.encode(), legacy.encode()):
        return Principal("admin", not role_tokens)
    raise ProtocolError(401, "unauthorized", "Invalid or missing authentication token.")


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
