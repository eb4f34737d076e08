"""Seeded fault injection ("nemesis") against a dw-server cluster on PostgreSQL.

The cluster tests each prove one failure at a time with a handful of workflows. Production
sees them mixed, under steady load, and the bugs live in the interleavings: a shard that moves
while a signal is in flight, a node that wakes from a freeze into a cluster that went on
without it, a journal pool that lost every connection at once. This harness reproduces such
interleavings from a seed, so a failing run can be replayed and a passing one means something:

1. It starts N ``dw-server`` processes on one PostgreSQL schema (fixed ports, short leases).
2. It runs load through the official SDK: one ``Worker`` per node and a starter that starts
   ``rate`` workflows per second round-robin over the nodes. Each workflow runs an activity, a
   1 s durable timer, waits for a signal, runs a second activity and returns a result derived
   from its input, so a wrong answer is detectable. Every start and signal the SDK
   acknowledged is recorded; failed client calls are retried (idempotently) through the next
   node and counted.
3. It injects faults every 10-25 s, each against one node drawn from ``random.Random(seed)``:
   SIGKILL + restart, SIGSTOP for ~15 s, termination of the node's PostgreSQL backends, and
   exactly one PostgreSQL restart per run.
4. After a quiet phase it reads every acknowledged workflow back (describe + full history)
   and counts what a durable system must never do: lose an acknowledged start or signal,
   duplicate an event, leave a gap in a history, return a wrong result, leave a workflow
   unfinished 60 s after the last fault, or let a node process die on its own.

``python -m ops.nemesis --duration 600 --seed 7`` runs it from the command line (exit status 1
on any violation); ``run(NemesisConfig(...))`` returns a ``NemesisResult`` for tests. This package
is self-contained (it must not import the test suite): it only needs the SDK and asyncpg.

Its modules, one job each: ``workload`` (the workflow under test and the record of one),
``config``, ``plan`` (the seeded fault schedule), ``report`` (results, their summary, the
narrative log), ``processes`` (node processes and their process trees), ``postgres``,
``operations`` (client calls with retries and failover), ``state`` (what one run shares),
``cluster``, ``load``, ``faults``, ``check`` and ``judge`` (the read-back and its invariants),
``verdict``, ``scenario`` (the run from start to teardown) and ``cli``.
"""

from __future__ import annotations

from ops.nemesis.cli import main
from ops.nemesis.config import DEFAULT_DATABASE, NemesisConfig
from ops.nemesis.operations import ClientStats, GaveUp, NodeDown, Operations, error_name
from ops.nemesis.plan import ALL_FAULT_KINDS, FAULT_KINDS, PlannedFault, plan_faults
from ops.nemesis.processes import NodeProcess, free_port, process_tree
from ops.nemesis.report import FaultRecord, Narrator, NemesisResult, NodeReport
from ops.nemesis.scenario import Run, run, run_async
from ops.nemesis.workload import SIGNAL_NAME, WORKFLOW_TYPE, NemesisOrder, WorkflowRecord, expected_result

__all__ = [
    "ALL_FAULT_KINDS", "DEFAULT_DATABASE", "FAULT_KINDS", "SIGNAL_NAME", "WORKFLOW_TYPE",
    "ClientStats", "FaultRecord", "GaveUp", "Narrator", "NemesisConfig", "NemesisOrder", "NemesisResult",
    "NodeDown", "NodeProcess", "NodeReport", "Operations", "PlannedFault", "Run", "WorkflowRecord",
    "error_name", "expected_result", "free_port", "main", "plan_faults", "process_tree", "run", "run_async",
]
