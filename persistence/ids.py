"""Identifiers and timestamps shared by every layer."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime

from .vocabulary import CROCKFORD as _CROCKFORD


def ulid(now: float | None = None, entropy: bytes | None = None) -> str:
    """A 26-character ULID: sortable by creation time, URL-path safe. ``entropy`` (10 bytes)
    replaces the random part, for id sources that must be reproducible."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10) if entropy is None else entropy[:10], "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def iso(ts: float | None) -> str | None:
    """Canonical protocol timestamp: six fractional digits and ``Z`` (the SDK requires it)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


MAX_SHARDS = 1024  # two base-32 characters at the end of a run id


def shard_of(namespace: str, key: str, count: int) -> int:
    """A stable shard in [0, count) for an address: the same on every node and every restart."""
    digest = hashlib.blake2b(f"{namespace}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def run_ulid(shard: int, now: float | None = None, entropy: bytes | None = None) -> str:
    """A ULID whose last two characters carry the shard, so a bare run or task id routes itself."""
    if not 0 <= shard < MAX_SHARDS:
        raise ValueError(f"shard {shard} is outside 0..{MAX_SHARDS - 1}")
    return ulid(now, entropy)[:-2] + _CROCKFORD[shard >> 5] + _CROCKFORD[shard & 31]


def shard_of_run(run_id: str) -> int | None:
    try:
        return _CROCKFORD.index(run_id[24]) << 5 | _CROCKFORD.index(run_id[25])
    except (IndexError, ValueError):
        return None
