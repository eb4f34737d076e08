"""Update validation task leases (extended spec §4.2): the fencing refusals the SDK treats as
final, in order, and a lease that lapses while the caller still waits going back to pending."""

from __future__ import annotations

import pytest

from actors import validation_tasks as vt


def _task() -> vt.ValidationTask:
    return vt.ValidationTask("01J0000000000000000000000A", "default", "q", "t", {"run_id": "r"}, deadline=100.0)


def test_claim_leases_with_the_kind_discriminator_and_never_past_the_callers_deadline() -> None:
    task = _task()
    out = vt.claim(task, "w", 90.0)
    assert out["task_kind"] == "update_validation" and out["update_validation_attempt"] == 1
    assert task.lease_expires == 100.0 and task.claimed
    assert vt.expire_lease(task, 99.0) is False
    task.lease_expires = 95.0
    assert vt.expire_lease(task, 96.0) and task.status == "pending" and task.owner is None


@pytest.mark.parametrize(("setup", "args", "reason"), [
    (lambda t: None, ("other-ns", "w", 1, 1.0), "update_validation_task_not_found"),
    (lambda t: None, ("default", "w", 1, 1.0), "update_validation_task_not_leased"),
    (lambda t: vt.claim(t, "w", 0.0), ("default", "x", 1, 1.0), "update_validator_worker_lost"),
    (lambda t: vt.claim(t, "w", 0.0), ("default", "w", 2, 1.0), "stale_update_validation_completion"),
    (lambda t: vt.claim(t, "w", 0.0), ("default", "w", 1, 31.0), "update_validation_lease_expired"),
    (lambda t: (vt.claim(t, "w", 0.0), vt.approve(t)), ("default", "w", 1, 1.0), "duplicate_update_validation_completion"),
])
def test_refusals(setup, args, reason) -> None:  # type: ignore[no-untyped-def]
    task = _task()
    setup(task)
    with pytest.raises(vt.ValidationTaskError) as info:
        vt.guard(task, *args)
    assert info.value.reason == reason


def test_a_rejection_keeps_the_validators_message_and_errors() -> None:
    task = _task()
    vt.claim(task, "w", 0.0)
    assert vt.reject(task, {"message": "too big", "reason": "update_validator_rejected", "validation_errors": {"v": ["x"]}}) == \
        "update_validator_rejected"
    assert task.outcome == {"approved": False, "reason": "update_validator_rejected", "message": "too big",
                            "validation_errors": {"v": ["x"]}}
