"""What one run shares between its parts: the configuration, the clock, the narrative, the
nodes, every workflow submitted, the client statistics and the result being filled in.

The cluster, load, faults, check and verdict modules each act on this state; ``scenario.Run``
adds the order in which they run."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path

from durable_workflow import Client

from ops.nemesis.config import NemesisConfig
from ops.nemesis.operations import ClientStats, Operations
from ops.nemesis.processes import NodeProcess
from ops.nemesis.report import Narrator, NemesisResult
from ops.nemesis.workload import WorkflowRecord


class RunState:
    """The state of one nemesis run. Times are seconds since the run began (``now``)."""

    def __init__(self, cfg: NemesisConfig) -> None:
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.log_dir = Path(cfg.log_dir) if cfg.log_dir else Path(tempfile.mkdtemp(prefix=f"dw-nemesis-{cfg.seed}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.narrator = Narrator(self.log_dir / "harness.log", self.t0, cfg.echo)
        self.tag = f"nx{uuid.uuid4().hex[:6]}"
        self.task_queue = f"{self.tag}-q"
        self.fault_rng = random.Random(cfg.seed)
        self.load_rng = random.Random(cfg.seed * 7919 + 1)  # the load never shifts the fault schedule
        self.result = NemesisResult(seed=cfg.seed, faults_enabled=cfg.faults, log_dir=str(self.log_dir))
        self.nodes: list[NodeProcess] = []
        self.records: dict[str, WorkflowRecord] = {}
        self.stats = ClientStats()
        self.ops: Operations | None = None
        self.clients: list[Client] = []  # the harness's own clients, one per node
        self.background: list[asyncio.Task[None]] = []  # workers, monitor, death watch, progress, nemesis
        self.pending: set[asyncio.Task[None]] = set()  # start and signal operations in flight
        self.nemesis_done = asyncio.Event()
        self.stopping = asyncio.Event()
        self.last_fault_end: float | None = None
        self.worker_restarts = 0
        self.own_schema: str | None = None
        self.load_end = float("inf")  # set when the load begins
        self.dsn = ""
        self.base_dsn = ""
        self.db_host, self.db_port = "127.0.0.1", 5432  # of ``dsn``, once the schema is known

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run_time_of(self, stamp: str | None) -> float | None:
        """A server timestamp (ISO 8601, UTC) as seconds since the run began."""
        if not stamp:
            return None
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - self.t0_wall
        except ValueError:
            return None

    def say(self, message: str) -> None:
        self.narrator.say(message)

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` as a pending task: cancelled and awaited with the rest when the run stops."""
        task = asyncio.ensure_future(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def outstanding(self) -> list[WorkflowRecord]:
        """Signalled workflows not yet seen completed."""
        return [r for r in self.records.values() if r.signal_acked_at is not None and r.completed_seen_at is None]
