"""Workflow memo updates (extended spec §3): the ``upsert_memo`` command and its merge.

The memo is non-indexed metadata shown by describe and list. A workflow merges keys into it
through history (``MemoUpserted``) so replay and continue-as-new agree on its value. The SDK's
replay re-checks both the entries and the merged memo against the same limits it applies when
authoring, so the server checks them too: a merge that replay would refuse is refused here, with
the field named, before anything is recorded.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from persistence import avro

from .errors import invalid as _invalid

MAX_ENTRIES = 100
MAX_VALUE_BYTES = 10_240
MAX_TOTAL_BYTES = 65_536
KEY = re.compile(r"^(?!-?[0-9]+$)[A-Za-z0-9_.:-]{1,64}$")
CAPABILITY = {"supported": True, "command": "upsert_memo", "history_event": "MemoUpserted",
              "max_entries": MAX_ENTRIES, "max_value_bytes": MAX_VALUE_BYTES, "max_total_bytes": MAX_TOTAL_BYTES}



def _size(value: Any) -> int:
    return len(base64.b64decode(avro.encode(value))) - 10  # without the single-object header


def _json_value(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v) for k, v in value.items())
    return False


def _check_map(entries: dict[str, Any], path: str, what: str, *, require: bool) -> None:
    if require and not entries:
        raise _invalid(path, "A memo update needs at least one entry.")
    if len(entries) > MAX_ENTRIES:
        raise _invalid(path, f"The {what} has {len(entries)} entries; at most {MAX_ENTRIES} are allowed.")
    for key, value in entries.items():
        if not KEY.fullmatch(key):
            raise _invalid(path, f"Memo key [{key}] must match {KEY.pattern} (the {what} would not replay).")
        if _size(value) > MAX_VALUE_BYTES:
            raise _invalid(path, f"Memo value [{key}] exceeds {MAX_VALUE_BYTES} Avro bytes.")
    if _size(dict(sorted(entries.items()))) > MAX_TOTAL_BYTES:
        raise _invalid(path, f"The {what} exceeds {MAX_TOTAL_BYTES} Avro bytes.")


def validate(cmd: dict[str, Any], path: str) -> dict[str, Any]:
    """The command with its decoded entries; 422 ``validation_failed`` on ``commands.N.entries``."""
    at = f"{path}.entries"
    env = cmd.get("entries")
    if not isinstance(env, dict) or set(env) != {"codec", "blob"} or env.get("codec") != "avro" or not isinstance(env.get("blob"), str):
        raise _invalid(at, "The entries field must be an inline Avro envelope {codec: avro, blob}.")
    try:
        entries = avro.decode(env["blob"])
    except avro.PayloadError as exc:
        raise _invalid(at, f"The entries blob is not an Avro Value: {exc}.") from None
    if not isinstance(entries, dict):
        raise _invalid(at, "The entries blob must decode to a map of memo keys to values.")
    if not all(_json_value(v) for v in entries.values()):
        raise _invalid(at, "Memo values must be JSON values (no bytes): describe and list show them as JSON.")
    _check_map(entries, at, "update", require=True)
    return {"type": "upsert_memo", "entries": {"codec": "avro", "blob": env["blob"]}, "decoded": entries}


def merge(memo: dict[str, Any], entries: dict[str, Any], path: str) -> dict[str, Any]:
    """The memo after the update (a null value removes its key), sorted as the SDK sorts it."""
    merged = dict(memo)
    for key, value in entries.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    merged = dict(sorted(merged.items()))
    _check_map(merged, f"{path}.entries", "merged memo", require=False)
    return merged
