"""The words every layer shares, written once: the id alphabet and the task-id format, run
statuses and their buckets, and the history offset tokens.

It sits in the lowest layer that needs any of them (the PostgreSQL journal filters on the
terminal statuses), so the layers above import it instead of spelling their own copy.
"""

from __future__ import annotations

import base64
import binascii

# --- ids ---------------------------------------------------------------------------

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # ULID characters: no I, L, O, U
_CROCKFORD_SET = frozenset(CROCKFORD)
ULID_LENGTH = 26


def is_ulid(text: str) -> bool:
    return len(text) == ULID_LENGTH and set(text) <= _CROCKFORD_SET


def workflow_task_id(run_id: str, counter: int) -> str:
    return f"{run_id}-wt{counter}"


def activity_execution_id(run_id: str, seq: int) -> str:
    """An activity's execution id, which is also its task id."""
    return f"{run_id}-a{seq}"


def run_of_task(task_id: str) -> str | None:
    """Task ids start with their run id and a dash; None for anything this server never issued."""
    run_id, dash, _ = task_id.partition("-")
    return run_id if dash and is_ulid(run_id) else None


# --- run statuses ------------------------------------------------------------------

OPEN_STATUSES = ("pending", "running", "waiting")
TERMINAL_STATUSES = ("completed", "failed", "cancelled", "terminated")
STOPPED_STATUSES = ("cancelled", "terminated")  # closed from outside the workflow
STATUS_BUCKETS: dict[str, tuple[str, ...]] = {
    "running": OPEN_STATUSES,
    "completed": ("completed",),
    "failed": ("failed", *STOPPED_STATUSES),
}
BUCKET_OF: dict[str, str] = {status: bucket for bucket, statuses in STATUS_BUCKETS.items() for status in statuses}


# --- history offset tokens ---------------------------------------------------------


def encode_offset(offset: int) -> str:
    """History pages are addressed by event offset, carried as base64 of the decimal."""
    return base64.b64encode(str(offset).encode()).decode()


def decode_offset(token: str) -> int:
    """The offset in a token this server issued; ``ValueError`` for anything else."""
    try:
        value = int(base64.b64decode(token, validate=True).decode())
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not an offset token") from exc
    if value < 0:
        raise ValueError("negative offset")
    return value
