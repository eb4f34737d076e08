"""The JSON metric views of extended spec §15.2–§15.3 (``/api/system/metrics``,
``/api/system/operator-metrics``), for operators and dashboards that read JSON rather than
Prometheus text (``runtime.metrics``).

They are snapshots of what this node holds: its live runs' tasks and leases, the worker
registry, the namespace's schedules. In a cluster each node answers for the runs it owns
(``scope: node``); the counters the spec's engine keeps and this server does not (claim and
dispatch failures of a database queue, projection tables) are reported as 0 or null, never
invented.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from actors.decide_operator import REDISPATCH_AFTER_SECONDS
from actors.messages import WorkView
from persistence.ids import iso

from .engine import Engine
from .schedule_state import ScheduleState
from .system_ops import SystemOps
from .workers import WorkerService

WORKFLOW_TYPE_LIMIT = 20  # label cardinality bound of the per-type breakdown
FAILING_AFTER = 1  # a run counts once its workflow task failed this many times in a row


def _cardinality(limit: int) -> dict[str, Any]:
    return {"max_label_values": limit, "overflow_label": "__other__", "strategy": "top_n_by_value"}


class SystemMetrics:
    def __init__(self, engine: Engine, workers: WorkerService, system: SystemOps) -> None:
        self.engine = engine
        self.workers = workers
        self.system = system

    def _runs(self, namespace: str) -> list[WorkView]:
        return [r for r in self.engine.work_views() if r.namespace == namespace and r.is_open]

    def metrics(self, namespace: str) -> dict[str, Any]:
        failing = [r for r in self._runs(namespace) if r.workflow_task_failures >= FAILING_AFTER]
        by_type = Counter(r.workflow_type or "" for r in failing)
        worst: dict[str, int] = {}
        for r in failing:
            key = r.workflow_type or ""
            worst[key] = max(worst.get(key, 0), r.workflow_task_failures)
        ranked = sorted(by_type, key=lambda t: (-worst[t], -by_type[t], t))
        shown, hidden = ranked[:WORKFLOW_TYPE_LIMIT], ranked[WORKFLOW_TYPE_LIMIT:]
        failures = {
            "max_consecutive_failures": max(worst.values(), default=0),
            "failed_task_count": len(failing),
            "workflow_type_count": len(ranked),
            "workflow_type_limit": WORKFLOW_TYPE_LIMIT,
            "workflow_types_truncated": bool(hidden),
            "suppressed_workflow_type_count": len(hidden),
            "suppressed_failed_task_count": sum(by_type[t] for t in hidden),
            "label_cardinality_policy": _cardinality(WORKFLOW_TYPE_LIMIT),
            "by_workflow_type": [{"workflow_type": t, "max_consecutive_failures": worst[t], "failed_task_count": by_type[t]}
                                 for t in shown],
        }
        drift = {"total": 0, "table_count": 0, "tables_with_drift": 0, "scope": "server",
                 "label_cardinality_policy": _cardinality(0), "by_table": []}  # the journal is the only truth: no projections
        return {
            "generated_at": iso(self.engine.clock.now()),
            "namespace": namespace,
            "scope": "node",
            "metrics": {"dw_workflow_task_consecutive_failures": failures, "dw_projection_drift_total": drift},
            "cardinality": {"metric_label_sets": {
                "dw_workflow_task_consecutive_failures": {"labels": ["workflow_type"], "values": len(shown)},
                "dw_projection_drift_total": {"labels": ["table"], "values": 0},
            }},
        }

    def operator_metrics(self, namespace: str, schedules: list[ScheduleState], sessions: dict[str, int]) -> dict[str, Any]:
        now = self.engine.clock.now()
        runs = self._runs(namespace)
        tasks = [t for r in runs for t in ([r.workflow_task] if r.workflow_task else []) + list(r.activities)]
        ready = [t for t in tasks if t.status in ("ready", "pending")]
        due = [t for t in ready if t.available_at <= now]
        delayed = [t for t in ready if t.available_at > now]
        leased = [t for t in tasks if t.status in ("leased", "running") and not (t.task_type == "activity" and t.attempt_closed)]
        expired = [t for t in leased if (t.lease_expires_at or 0.0) <= now]
        overdue = [t for t in due if t.available_at <= now - REDISPATCH_AFTER_SECONDS]
        existing, missing = self.system.candidates()
        waiting = [r for r in runs if r.workflow_task is None and all(a.status == "closed" for a in r.activities)]
        oldest_ready = min((t.available_at for t in due), default=None)
        activities = [a for r in runs for a in r.activities]
        timeout_overdue = [a for a in activities if any(d <= now for d in a.deadlines)]
        rows = [w for (ns, _), w in self.workers.workers.items() if ns == namespace]
        active = [w for w in rows if not self.workers.is_stale(w, now)]
        live = [s for s in schedules if s.status != "deleted"]
        overdue_schedules = [s for s in live if s.status == "active" and s.next_fire_at is not None and s.next_fire_at < now - 1]
        oldest_overdue = min((s.next_fire_at for s in overdue_schedules if s.next_fire_at is not None), default=None)
        unhealthy = len(expired) + len(overdue)
        return {
            "namespace": namespace,
            "operator_metrics": {
                "generated_at": iso(now),
                "scope": "node",
                "runs": {
                    "open": len(runs), "repair_needed": len(existing) + len(missing), "claim_failed": 0, "compatibility_blocked": 0,
                    "waiting": len(waiting), "oldest_wait_started_at": None, "max_wait_age_ms": None,
                    "workflow_task_failing": sum(1 for r in runs if r.workflow_task_failures >= FAILING_AFTER),
                },
                "tasks": {
                    "ready": len(ready), "ready_due": len(due), "delayed": len(delayed), "leased": len(leased),
                    "dispatch_failed": 0, "claim_failed": 0, "dispatch_overdue": len(overdue), "lease_expired": len(expired),
                    "unhealthy": unhealthy, "oldest_ready_at": iso(oldest_ready),
                    "max_ready_age_ms": int((now - oldest_ready) * 1000) if oldest_ready is not None else 0,
                    "oldest_lease_expired_at": iso(min((t.lease_expires_at or now for t in expired), default=None)),
                },
                "backlog": {
                    "runnable_tasks": len(due), "delayed_tasks": len(delayed), "leased_tasks": len(leased), "unhealthy_tasks": unhealthy,
                    "repair_needed_runs": len(existing) + len(missing), "claim_failed_runs": 0, "compatibility_blocked_runs": 0,
                },
                "repair": {
                    "existing_task_candidates": len(existing), "missing_task_candidates": len(missing),
                    "selected_existing_task_candidates": min(len(existing), 100),
                    "selected_missing_task_candidates": min(len(missing), 100),
                },
                "workers": {
                    "required_compatibility": None, "active_workers": len(active),
                    "active_worker_scopes": len({w.task_queue for w in active}),
                    "active_workers_supporting_required": len(active), "stale_workers": len(rows) - len(active),
                    "fleet": [{"worker_id": w.worker_id, "task_queue": w.task_queue, "build_id": w.info.get("build_id"),
                               "last_heartbeat_at": iso(w.last_seen)} for w in sorted(active, key=lambda w: w.worker_id)[:100]],
                },
                "backend": {"supported": True, "severity": "ok", "database": "postgresql" if self.engine.owned is not None else "sqlite",
                            "queue": "in_memory_offers", "cache": "run_actors", "issues": []},
                "schedules": {
                    "active": sum(1 for s in live if s.status == "active"), "paused": sum(1 for s in live if s.status == "paused"),
                    "missed": len(overdue_schedules), "oldest_overdue_at": iso(oldest_overdue),
                    "max_overdue_ms": int((now - oldest_overdue) * 1000) if oldest_overdue is not None else 0,
                    "fires_total": sum(s.fires_count for s in live), "failures_total": sum(s.failures_count for s in live),
                },
                "activities": {
                    "open": len(activities), "pending": sum(1 for a in activities if a.status == "pending"),
                    "running": sum(1 for a in activities if a.status == "running" and not a.attempt_closed),
                    "retrying": sum(1 for a in activities if a.status == "pending" and (a.attempt or 0) > 0),
                    "timeout_overdue": len(timeout_overdue), "failed_attempts": None,
                    "max_attempt_count": max((a.attempt or 0 for a in activities), default=0),
                },
                "repair_policy": dict(self.system.repair_status()["policy"]),
                "sticky_execution": {
                    "active_sticky_runs": sum(1 for r in runs if r.sticky),
                    "ready_sticky_tasks": sum(1 for r in runs if r.sticky and r.workflow_task and r.workflow_task.status == "ready"),
                    "leased_sticky_tasks": sum(1 for r in runs if r.sticky and r.workflow_task and r.workflow_task.status == "leased"),
                    "hit_expected_last_minute": None, "miss_last_minute": None, "forced_cold_replay_last_minute": None,
                    "cold_replay_last_minute": None, "hit_rate_last_minute": None, "miss_rate_last_minute": None,
                    "capacity_pressure_tasks": None,
                },
                "worker_sessions": {"total": sum(sessions.values()), **{k: sessions.get(k, 0) for k in
                                                                          ("active", "closed", "expired", "failed", "orphaned")}},
            },
        }
