"""The verdict: the run's figures gathered into the result, and every violation named."""

from __future__ import annotations

from collections import Counter

from ops.nemesis.config import NemesisConfig
from ops.nemesis.report import NemesisResult, NodeReport
from ops.nemesis.state import RunState


def verdict(run: RunState) -> None:
    """Fill in ``run.result``: its figures, then its violations and harness errors."""
    tally(run)
    name_violations(run.result, run.cfg)


def tally(run: RunState) -> None:
    """The figures of the run: workflows, faults, latency, client errors, nodes."""
    r = run.result
    recs = list(run.records.values())
    r.workflows_submitted = len(recs)
    r.starts_acknowledged = sum(x.start_acked_at is not None for x in recs)
    r.starts_unacknowledged = sum(x.start_gave_up or (x.start_acked_at is None) for x in recs)
    r.signals_acknowledged = sum(x.signal_acked_at is not None for x in recs)
    r.signals_unacknowledged = sum(x.start_acked_at is not None and x.signal_acked_at is None for x in recs)
    r.faults_by_kind = dict(Counter(f.kind for f in r.faults if f.injected))
    took = sorted(x.completed_seen_at - x.start_acked_at for x in recs
                  if x.completed_seen_at is not None and x.start_acked_at is not None)
    if took:
        r.latency = {"p50": took[len(took) // 2], "p99": took[min(len(took) - 1, int(len(took) * 0.99))], "max": took[-1]}
    r.last_fault_end = run.last_fault_end
    r.client_errors = sum(run.stats.errors.values())
    r.client_errors_by_op = dict(run.stats.errors)
    r.client_error_types = dict(run.stats.error_types)
    r.failovers = run.stats.failovers
    r.slowest_failover = run.stats.slowest_failover
    r.slowest_failover_op = run.stats.slowest_failover_op
    r.worker_restarts = run.worker_restarts
    r.nodes = []
    for n in run.nodes:
        tracebacks, lease_losses = n.log_counts()
        r.nodes.append(NodeReport(n.node_id, n.url, n.generations, n.nemesis_kills, list(n.unexpected_exits),
                                  n.restart_failures, tracebacks, str(n.log_path), list(n.orphans), lease_losses,
                                  list(n.start_failures)))


def violation_names(cfg: NemesisConfig) -> dict[str, str]:
    """How each counted kind of violation is named in the verdict."""
    return {
        "lost_starts": "acknowledged starts lost", "lost_signals": "acknowledged signals lost",
        "duplicate_signals": "signals recorded more than once", "duplicate_events": "histories with duplicate events",
        "gaps": "histories with gaps", "wrong_results": "wrong results", "stuck": "workflows never completed",
        "late": f"workflows completed more than {cfg.completion_deadline:.0f} s after the last fault",
        "run_replaced": "acknowledged runs replaced by another run", "unreadable": "workflows the checker could not read",
    }


def name_violations(r: NemesisResult, cfg: NemesisConfig) -> None:
    """Every counted violation, unacknowledged operation and node misbehaviour as a line of
    ``violations``; a faulted run that never restarted PostgreSQL is a harness error."""
    for key, text in violation_names(cfg).items():
        if r.counts.get(key):
            r.violations.append(f"{text}: {r.counts[key]} (e.g. {', '.join(r.examples.get(key, [])[:3])})")
    if r.starts_unacknowledged:
        r.violations.append(f"starts never acknowledged within {cfg.operation_deadline:.0f} s of retries: "
                            f"{r.starts_unacknowledged}")
    if r.signals_unacknowledged:
        r.violations.append(f"signals never acknowledged within {cfg.operation_deadline:.0f} s of retries: "
                            f"{r.signals_unacknowledged}")
    for n in r.nodes:
        if n.unexpected_exits:
            r.violations.append(f"node {n.node_id} died on its own {len(n.unexpected_exits)} time(s): "
                                f"{n.unexpected_exits[0][:300]}")
        if n.start_failures:
            r.violations.append(f"node {n.node_id}: a process exited while starting {len(n.start_failures)} time(s): "
                                f"{n.start_failures[0][:300]}")
        if n.orphans:
            r.violations.append(f"node {n.node_id}: {'; '.join(n.orphans)}")
        if n.restart_failures:
            r.violations.append(f"node {n.node_id} failed to start {n.restart_failures} time(s) (see {n.log_path})")
    if cfg.faults and not r.faults_by_kind.get("pg_restart"):
        r.harness_errors.append("the run did not restart PostgreSQL")
