"""What a run found and how it is told: the result a caller asserts on, its one-screen
summary, and the timestamped narrative that lines faults up with the node logs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ops.nemesis.plan import ALL_FAULT_KINDS

COUNT_LABELS = (
    ("lost_starts", "lost starts"), ("lost_signals", "lost signals"), ("duplicate_signals", "duplicate signals"),
    ("duplicate_events", "duplicate events"), ("gaps", "gaps"), ("wrong_results", "wrong results"),
    ("stuck", "stuck"), ("late", "late"), ("run_replaced", "run replaced"), ("unreadable", "unreadable"),
)


@dataclass
class FaultRecord:
    kind: str
    node: str | None
    started: float  # seconds since the run began
    ended: float
    detail: str
    injected: bool


@dataclass
class NodeReport:
    node_id: str
    url: str
    generations: int  # processes started for this node
    nemesis_kills: int
    unexpected_exits: list[str]  # "t=..s pid .. exit code ..: last log lines"
    restart_failures: int
    tracebacks: int
    log_path: str
    orphans: list[str] = field(default_factory=list)
    lease_losses: int = 0  # informational: how often the node logged losing its lease session
    start_failures: list[str] = field(default_factory=list)

    @property
    def stayed_up(self) -> bool:
        return not self.unexpected_exits and not self.restart_failures and not self.start_failures


@dataclass
class NemesisResult:
    """Everything a caller asserts on; ``violations`` is empty exactly when the run passed."""

    seed: int
    faults_enabled: bool
    log_dir: str
    faults: list[FaultRecord] = field(default_factory=list)
    faults_by_kind: dict[str, int] = field(default_factory=dict)
    last_fault_end: float | None = None
    workflows_submitted: int = 0
    starts_acknowledged: int = 0
    starts_unacknowledged: int = 0
    signals_acknowledged: int = 0
    signals_unacknowledged: int = 0
    completed: int = 0
    completed_on_time: int = 0
    latency: dict[str, float] = field(default_factory=dict)  # start acknowledged -> seen completed: p50, p99, max
    counts: dict[str, int] = field(default_factory=dict)  # lost_starts, duplicate_events, ...
    examples: dict[str, list[str]] = field(default_factory=dict)
    client_errors: int = 0
    client_errors_by_op: dict[str, int] = field(default_factory=dict)
    client_error_types: dict[str, int] = field(default_factory=dict)
    failovers: int = 0
    slowest_failover: float = 0.0
    slowest_failover_op: str = ""
    worker_restarts: int = 0
    nodes: list[NodeReport] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and not self.harness_errors

    def summary(self) -> str:
        """The figures a reader needs to judge the run, one item per line."""
        kinds = ", ".join(f"{k} {self.faults_by_kind.get(k, 0)}" for k in ALL_FAULT_KINDS)
        c = self.counts
        lines = [
            f"nemesis seed {self.seed} ({'faults' if self.faults_enabled else 'NO faults'}), "
            f"{self.elapsed:.0f} s, logs in {self.log_dir}",
            f"faults injected: {sum(self.faults_by_kind.values())} ({kinds})"
            + (f"; last fault ended at t={self.last_fault_end:.1f}s" if self.last_fault_end is not None else ""),
            f"workflows: submitted {self.workflows_submitted}, starts acknowledged {self.starts_acknowledged} "
            f"(gave up {self.starts_unacknowledged}), signals acknowledged {self.signals_acknowledged} "
            f"(gave up {self.signals_unacknowledged}), completed {self.completed} "
            f"(on time {self.completed_on_time}); start-to-completion as observed: "
            + (", ".join(f"{k} {v:.1f} s" for k, v in self.latency.items()) or "-"),
            ", ".join(f"{label} {c.get(key, 0)}" for key, label in COUNT_LABELS),
            f"client errors: {self.client_errors} {dict(self.client_errors_by_op)}; "
            f"failovers {self.failovers}, slowest {self.slowest_failover:.1f} s ({self.slowest_failover_op or '-'})",
            f"client error types: {dict(self.client_error_types)}",
            f"SDK worker restarts: {self.worker_restarts}",
        ]
        for n in self.nodes:
            state = "stayed up" if n.stayed_up else (
                f"DIED ON ITS OWN x{len(n.unexpected_exits)}, failed starts x{len(n.start_failures)}")
            lines.append(
                f"node {n.node_id} ({n.url}): {state}; processes {n.generations}, killed by nemesis "
                f"{n.nemesis_kills}, restart failures {n.restart_failures}, tracebacks in log {n.tracebacks}, "
                f"lease sessions lost {n.lease_losses}; "
                f"log {n.log_path}"
            )
            lines += [f"    {exit_}" for exit_ in n.unexpected_exits]
            lines += [f"    {orphan}" for orphan in n.orphans]
            lines += [f"    start failure: {failure}" for failure in n.start_failures]
        for name, ids in sorted(self.examples.items()):
            lines.append(f"examples of {name}: {', '.join(ids)}")
        lines += [f"HARNESS ERROR: {e}" for e in self.harness_errors]
        lines += [f"VIOLATION: {v}" for v in self.violations]
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


class Narrator:
    """Timestamped lines to stdout and to ``harness.log``: a fault is only useful evidence if it
    can be lined up with the node logs, which carry wall-clock times."""

    def __init__(self, path: Path, t0: float, echo: bool) -> None:
        self.t0 = t0
        self.echo = echo
        self._file = open(path, "a", encoding="utf-8")  # closed by close()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        line = f"[nemesis {stamp} t={self.elapsed():7.2f}s] {message}"
        if self.echo:
            print(line, flush=True)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

