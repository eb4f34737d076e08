"""The fault schedule: drawn up front from the seed, so a run can be replayed."""

from __future__ import annotations

import random
from dataclasses import dataclass

FAULT_KINDS = ("kill", "stop", "pg_terminate")  # drawn per fault; "pg_restart" happens exactly once
ALL_FAULT_KINDS = (*FAULT_KINDS, "pg_restart")


@dataclass
class PlannedFault:
    gap: float  # seconds after the previous fault ended (or the load began)
    kind: str
    node: int
    downtime: float  # for "kill": seconds between the kill and the restart
    scope: str = "process"  # for "stop": freeze the node's main process, or its whole process tree


def plan_faults(rng: random.Random, duration: float, nodes: int, interval: tuple[float, float],
                stop_seconds: float) -> list[PlannedFault]:
    """The whole fault schedule, drawn up front from the seed so that a run can be replayed.
    Gaps are measured from the (nominal) end of the previous fault; a fault is planned if it
    begins at least 5 s before the load phase ends (the load goes on until the last fault is
    over, so a fault never hits an idle cluster). Exactly one fault is the PostgreSQL restart."""
    nominal = {"kill": 6.0, "stop": stop_seconds, "pg_terminate": 1.0, "pg_restart": 6.0}
    plan: list[PlannedFault] = []
    at = 0.0
    while True:
        fault = PlannedFault(rng.uniform(*interval), rng.choice(FAULT_KINDS), rng.randrange(nodes), rng.uniform(0.5, 3.0),
                             rng.choice(("process", "tree")))
        if at + fault.gap > duration - 5:
            break
        plan.append(fault)
        at += fault.gap + nominal[fault.kind]
    if plan:
        plan[rng.randrange(len(plan))].kind = "pg_restart"
    else:
        plan.append(PlannedFault(min(interval[0], duration / 2), "pg_restart", 0, 0.0))
    return plan


def describe(p: PlannedFault) -> str:
    """One planned fault as the narrative announces it before the run begins."""
    return (f"planned fault: +{p.gap:.1f}s {p.kind}" + ("" if p.kind == "pg_restart" else f" node {p.node + 1}")
            + (f" (down {p.downtime:.1f} s)" if p.kind == "kill" else "")
            + (f" ({p.scope})" if p.kind == "stop" else ""))
