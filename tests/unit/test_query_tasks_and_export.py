"""Pure pieces of issue 4: query-task leases and the history bundle's integrity block."""

from __future__ import annotations

import hashlib
import json

import pytest

from actors import query_tasks as qt
from runtime import history_export

T0 = 1_800_000_000.0


def task(deadline: float = T0 + 30) -> qt.QueryTask:
    return qt.QueryTask("Q1", "default", "orders", "orders.fulfil", {"query_name": "status"}, deadline=deadline)


def test_claim_leases_to_the_poller_and_never_past_the_callers_deadline() -> None:
    t = task(deadline=T0 + 30)
    body = qt.claim(t, "w-1", T0)
    assert body["query_task_attempt"] == 1 and body["lease_owner"] == "w-1" and body["task_queue"] == "orders"
    assert t.lease_expires == T0 + 30  # 60 s lease capped by the caller's 30 s
    assert body["lease_expires_at"].endswith("Z") and body["query_name"] == "status"


def test_guard_checks_in_the_specs_order() -> None:
    t = task()
    with pytest.raises(qt.QueryTaskError) as e:
        qt.guard(None, "default", "w-1", 1, T0)
    assert e.value.reason == "query_task_not_found"
    with pytest.raises(qt.QueryTaskError) as e:
        qt.guard(t, "other", "w-1", 1, T0)
    assert e.value.reason == "query_task_not_found"
    with pytest.raises(qt.QueryTaskError) as e:
        qt.guard(t, "default", "w-1", 1, T0)
    assert e.value.reason == "query_task_not_leased"
    qt.claim(t, "w-1", T0)
    for owner, attempt, now, reason in (
        ("w-2", 1, T0, "lease_owner_mismatch"),
        ("w-1", 2, T0, "query_task_attempt_mismatch"),
        ("w-1", 1, T0 + 31, "lease_expired"),
    ):
        with pytest.raises(qt.QueryTaskError) as e:
            qt.guard(t, "default", owner, attempt, now)
        assert e.value.reason == reason
    qt.guard(t, "default", "w-1", 1, T0 + 1)


def test_expired_lease_returns_to_pending_only_while_the_caller_waits() -> None:
    t = task(deadline=T0 + 100)
    qt.claim(t, "w-1", T0)
    assert not qt.expire_lease(t, T0 + 59)
    assert qt.expire_lease(t, T0 + 60) and t.status == "pending" and t.owner is None
    assert qt.claim(t, "w-2", T0 + 61)["query_task_attempt"] == 2
    late = task(deadline=T0 + 10)
    qt.claim(late, "w-1", T0)
    assert not qt.expire_lease(late, T0 + 10)  # the caller has given up: nothing to hand out again


def test_failure_reason_defaults_to_query_rejected() -> None:
    t = task()
    qt.claim(t, "w-1", T0)
    assert qt.fail(t, {"message": "boom"}) == "query_rejected"
    assert t.status == "failed" and t.outcome == {"reason": "query_rejected", "message": "boom"}


def test_canonical_json_sorts_keys_recursively_and_keeps_utf8() -> None:
    assert history_export.canonical_json({"b": [{"z": 1, "a": "é"}], "a": None}) == '{"a":null,"b":[{"a":"é","z":1}]}'


def test_integrity_checksum_and_signature() -> None:
    bundle = {"schema": history_export.SCHEMA, "workflow": {"run_id": "r"}, "integrity": {"ignored": True}}
    plain = history_export.integrity(bundle, None, None)
    text = json.dumps({"schema": history_export.SCHEMA, "workflow": {"run_id": "r"}}, sort_keys=True, separators=(",", ":"))
    assert plain["checksum"] == hashlib.sha256(text.encode()).hexdigest()
    assert plain["signature"] is None and plain["key_id"] is None
    signed = history_export.integrity(bundle, b"k", "k1")
    other = history_export.integrity(bundle, b"k2", "k1")
    assert signed["signature"] != other["signature"] and len(signed["signature"]) == 64
    assert signed["checksum"] == plain["checksum"]
