"""Opaque page tokens and page-size parsing shared by the list endpoints.

A token is the URL-safe base64 of a small JSON object: a keyset position plus a fingerprint
of the filters it was issued for, so a token cannot silently page a different listing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def encode(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_raw(token: Any) -> str:
    """The token's text; ValueError (or UnicodeDecodeError) when it is not one of ours."""
    text = str(token)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def page_size(query: dict[str, str], errors: dict[str, list[str]], *, default: int = 50, maximum: int = 200) -> int:
    """``page_size`` from a query string; a bad value is added to ``errors``."""
    if not query.get("page_size"):
        return default
    try:
        size = int(query["page_size"])
        if not 1 <= size <= maximum:
            raise ValueError
    except ValueError:
        errors["page_size"] = [f"The page_size must be an integer between 1 and {maximum}."]
        return default
    return size
