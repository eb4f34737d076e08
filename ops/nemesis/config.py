"""The knobs of one nemesis run: what the command line sets and what tests override."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/dw_test"


@dataclass
class NemesisConfig:
    """One run. ``duration`` is the load (and fault) phase in seconds; ``quiet_seconds`` bounds
    the fault-free phase after it, which ends early once every workflow has completed."""

    duration: float = 600.0
    seed: int = 0
    nodes: int = 3
    rate: float = 10.0
    database: str | None = None
    quiet_seconds: float = 120.0
    faults: bool = True
    shard_count: int = 16
    completion_deadline: float = 60.0  # every workflow completes this long after the last fault
    fault_interval: tuple[float, float] = (10.0, 25.0)
    stop_seconds: float = 15.0
    log_dir: str | None = None
    workflow_task_lease_seconds: int = 5
    activity_lease_seconds: int = 5
    actor_idle_seconds: int = 5
    attempt_timeout: float = 12.0  # one client call; the server may hold a request 8 s for an owner
    check_seconds: float = 180.0  # the whole read-back; what is not read by then is "unreadable"
    operation_deadline: float = 120.0  # one logical operation (all its retries)
    restart_dead_nodes: bool = True  # a node that died on its own is recorded, then restarted
    echo: bool = True  # print the narrative to stdout (always written to harness.log)
