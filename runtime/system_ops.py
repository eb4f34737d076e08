"""Operator passes over the runs this node holds (control-plane §9.1-9.2).

The engine enforces leases and timeouts on its own through the timer service; these passes
let an operator see what is overdue and force the same decisions now: re-offer ready tasks
that no worker took, give a task to a run that lacks one, enforce activity timeouts. Each
reports per item, and the routes answer 207 when part of a pass failed.
"""

from __future__ import annotations

from typing import Any

from actors import messages as m
from actors.run_actor import NotOwner, RunNotFound, RunUnavailable

from .engine import Engine

REDISPATCH_AFTER_SECONDS = 3.0
REPAIR_INTERVAL = 5.0  # the background pass (runtime.repair_loop)
SCAN_LIMIT = 25


class SystemOps:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.background: Any = None  # the RepairLoop, once the node runs one

    # --- activity timeouts ---------------------------------------------------------

    def _expired(self) -> dict[str, str]:
        """Open activity executions past a deadline -> the run holding them."""
        now = self.engine.clock.now()
        found: dict[str, str] = {}
        for run in self.engine.work_views():
            if not run.is_open:
                continue
            for act in run.activities:
                if act.status != "closed" and act.execution_id and any(dl <= now for dl in act.deadlines):
                    found[act.execution_id] = run.run_id
        return dict(sorted(found.items()))

    def expired_activities(self, limit: int) -> tuple[list[str], bool]:
        ids = list(self._expired())
        return ids[:limit], len(ids) > limit

    def activity_timeout_status(self, limit: int) -> dict[str, Any]:
        ids, pressure = self.expired_activities(limit)
        return {"expired_count": len(ids), "expired_execution_ids": ids, "scan_limit": limit, "scan_pressure": pressure}

    async def activity_timeout_pass(self, execution_ids: list[str] | None, limit: int) -> dict[str, Any]:
        expired = self._expired()
        targets = list(dict.fromkeys(execution_ids)) if execution_ids is not None else list(expired)[:limit]
        results = []
        for exec_id in targets:
            if exec_id not in expired:
                results.append({"execution_id": exec_id, "outcome": "skipped", "reason": "not_expired"})
                continue
            run_id = expired[exec_id]
            try:
                await self.engine.ask(run_id, m.Tick())
                act = await self.engine.ask(run_id, m.ReadActivity(execution_id=exec_id))
            except (NotOwner, RunNotFound, RunUnavailable) as exc:
                results.append({"execution_id": exec_id, "outcome": "error", "reason": type(exc).__name__})
                continue
            except Exception as exc:  # noqa: BLE001 - reported per execution (spec 9.2: 207), the pass goes on
                results.append({"execution_id": exec_id, "outcome": "error", "reason": type(exc).__name__, "error": str(exc)[:300]})
                continue
            results.append({"execution_id": exec_id, "outcome": "enforced", "has_retry": act is not None and act.status == "pending"})
        return {
            "processed": len(results),
            "enforced": sum(1 for r in results if r["outcome"] == "enforced"),
            "skipped": sum(1 for r in results if r["outcome"] == "skipped"),
            "failed": sum(1 for r in results if r["outcome"] == "error"),
            "results": results,
        }

    # --- repair --------------------------------------------------------------------

    def _candidates(self, run_ids: set[str] | None, workflow_id: str | None) -> tuple[list[str], list[str]]:
        """(runs with a task nobody took in time or an expired lease, open runs lacking a task)."""
        now = self.engine.clock.now()
        existing, missing = [], []
        for run in self.engine.work_views():
            if not run.is_open or (run_ids is not None and run.run_id not in run_ids):
                continue
            if workflow_id is not None and run.workflow_id != workflow_id:
                continue
            wt = run.workflow_task
            stale_wt = wt is not None and (
                (wt.status == "ready" and wt.available_at <= now - REDISPATCH_AFTER_SECONDS)
                or (wt.status == "leased" and (wt.lease_expires_at or 0) <= now)
            )
            stale_act = any(
                (a.status == "pending" and a.available_at <= now - REDISPATCH_AFTER_SECONDS)
                or (a.status == "running" and not a.attempt_closed and (a.lease_expires_at or 0) <= now)
                for a in run.activities
            )
            if stale_wt or stale_act:
                existing.append(run.run_id)
            elif wt is None and run.status in ("pending", "running") and run.needs_workflow_task:
                missing.append(run.run_id)
        return sorted(existing), sorted(missing)

    def candidates(self) -> tuple[list[str], list[str]]:
        """(runs whose task or lease went stale, open runs lacking a task), on this node."""
        return self._candidates(None, None)

    def repair_status(self) -> dict[str, Any]:
        existing, missing = self._candidates(None, None)
        return {
            "policy": {
                "redispatch_after_seconds": REDISPATCH_AFTER_SECONDS, "loop_throttle_seconds": REPAIR_INTERVAL, "scan_limit": SCAN_LIMIT,
                "scan_strategy": "scope_fair_round_robin", "failure_backoff_max_seconds": 60,
                "failure_backoff_strategy": "exponential_by_repair_count",
            },
            "candidates": {
                "existing_task_candidates": len(existing), "missing_task_candidates": len(missing),
                "total_candidates": len(existing) + len(missing), "scan_limit": SCAN_LIMIT, "scan_strategy": "scope_fair_round_robin",
                "selected_existing_task_candidates": min(len(existing), SCAN_LIMIT),
                "selected_missing_task_candidates": min(len(missing), SCAN_LIMIT),
                "selected_total_candidates": min(len(existing), SCAN_LIMIT) + min(len(missing), SCAN_LIMIT),
                "existing_task_scan_limit_reached": len(existing) > SCAN_LIMIT,
                "missing_task_scan_limit_reached": len(missing) > SCAN_LIMIT,
                "scan_pressure": len(existing) > SCAN_LIMIT or len(missing) > SCAN_LIMIT,
                "oldest_task_candidate_created_at": None, "oldest_missing_run_started_at": None,
                "max_task_candidate_age_ms": 0, "max_missing_run_age_ms": 0, "scopes": [],
            },
            **({"background_pass": dict(self.background.last)} if self.background is not None else {}),
        }

    async def repair_pass(self, run_ids: list[str] | None, workflow_id: str | None) -> dict[str, Any]:
        existing, missing = self._candidates(set(run_ids) if run_ids is not None else None, workflow_id)
        existing, missing = existing[:SCAN_LIMIT], missing[:SCAN_LIMIT]
        existing_failures: list[dict[str, Any]] = []
        missing_failures: list[dict[str, Any]] = []
        repaired_existing = repaired_missing = 0
        for run_id in existing:
            try:
                await self.engine.ask(run_id, m.Tick())  # releases expired leases, enforces what is due
                self.engine.offers.resend(run_id)  # and offers every ready task to the pollers again
                repaired_existing += 1
            except Exception as exc:  # noqa: BLE001 - reported per run
                existing_failures.append({"run_id": run_id, "error": str(exc)[:300]})
        for run_id in missing:
            try:
                if await self.engine.ask(run_id, m.Repair()):
                    repaired_missing += 1
            except Exception as exc:  # noqa: BLE001 - reported per run
                missing_failures.append({"run_id": run_id, "error": str(exc)[:300]})
        return {
            "throttled": False, "run_ids": run_ids or [], "instance_id": workflow_id,
            "selected_existing_task_candidates": len(existing), "selected_missing_task_candidates": len(missing),
            "selected_total_candidates": len(existing) + len(missing),
            "repaired_existing_tasks": repaired_existing, "repaired_missing_tasks": repaired_missing,
            "dispatched_tasks": repaired_existing + repaired_missing,
            "existing_task_failures": existing_failures, "missing_run_failures": missing_failures,
            "selected_command_contract_candidates": 0, "backfilled_command_contracts": 0,
            "command_contract_backfill_unavailable": 0, "command_contract_failures": [],
            "deadline_expired_candidates": 0, "deadline_expired_tasks_created": 0, "deadline_expired_failures": [],
            "activity_timeout_candidates": 0, "activity_timeouts_enforced": 0, "activity_timeout_failures": [],
        }
