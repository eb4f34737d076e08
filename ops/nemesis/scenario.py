"""One nemesis run from start to teardown: bring the cluster up, load it while the faults go
in, let it quiet down, read everything back, tear down, and give the verdict. Whatever goes
wrong, the teardown runs (no node left running, PostgreSQL left up, the schema dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from durable_workflow import Client, TransportRetryPolicy

from ops.nemesis import cluster, load
from ops.nemesis.check import check
from ops.nemesis.config import NemesisConfig
from ops.nemesis.faults import nemesis
from ops.nemesis.judge import judge
from ops.nemesis.operations import Operations
from ops.nemesis.plan import PlannedFault, describe, plan_faults
from ops.nemesis.report import NemesisResult
from ops.nemesis.state import RunState
from ops.nemesis.verdict import verdict
from ops.nemesis.workload import WorkflowRecord


@contextlib.contextmanager
def sdk_log_to(path: Path) -> Iterator[None]:
    """The SDK's own log goes to ``path`` for the run (not to the console), then back."""
    sdk_log = logging.getLogger("durable_workflow")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = (sdk_log.propagate, sdk_log.level)
    sdk_log.addHandler(handler)
    sdk_log.propagate = False
    sdk_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        sdk_log.removeHandler(handler)
        handler.close()
        sdk_log.propagate, _ = saved
        sdk_log.setLevel(saved[1])


class Run(RunState):
    """One nemesis run; ``execute`` drives it from start to teardown."""

    async def execute(self) -> NemesisResult:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=16))
        with sdk_log_to(self.log_dir / "sdk.log"):
            plan = self.announce()
            try:
                await self.bring_up()
                await self.load_phase(plan)
                await self.wind_down()
                await self.check_phase()
            except Exception as exc:  # noqa: BLE001 - the run could not finish; say why, still tear down and report
                self.result.harness_errors.append(f"run aborted: {type(exc).__name__}: {exc}")
                self.say(f"RUN ABORTED: {type(exc).__name__}: {exc}")
            finally:
                await self.teardown()
        return self.finish()

    def announce(self) -> list[PlannedFault]:
        """Draw the fault plan from the seed and say it, with the run's shape, before anything starts."""
        cfg = self.cfg
        plan = plan_faults(self.fault_rng, cfg.duration, cfg.nodes, cfg.fault_interval, cfg.stop_seconds) if cfg.faults else []
        self.say(f"seed {cfg.seed}: {cfg.nodes} nodes, {cfg.rate}/s for {cfg.duration:.0f} s, quiet phase up to "
                 f"{cfg.quiet_seconds:.0f} s, logs in {self.log_dir}")
        for p in plan:
            self.say(describe(p))
        return plan

    async def bring_up(self) -> None:
        """Start the nodes, connect the harness's clients and wait for the cluster to settle."""
        cfg = self.cfg
        await cluster.start_nodes(self)
        # The harness's own calls: no SDK-level retries, so every failure reaches Operations.
        self.clients = [Client(n.url, timeout=cfg.attempt_timeout, retry_policy=TransportRetryPolicy(max_attempts=1))
                        for n in self.nodes]
        self.ops = Operations(self.clients, self.stats, self.narrator, cfg.attempt_timeout, cfg.operation_deadline)
        await cluster.converge(self, self.clients[0])

    async def load_phase(self, plan: list[PlannedFault]) -> None:
        """Workers, monitors and the nemesis in the background; the starter until the load
        phase and every fault are over."""
        self.background = [asyncio.ensure_future(c) for c in (
            *(load.supervise_worker(self, i) for i in range(len(self.nodes))),
            load.completion_monitor(self, self.clients), cluster.death_watch(self), load.progress(self),
        )]
        self.load_end = self.now() + self.cfg.duration
        if plan:
            self.background.append(asyncio.ensure_future(nemesis(self, plan)))
        else:
            self.nemesis_done.set()
        await load.starter(self)
        await self.nemesis_done.wait()

    async def quiet_phase(self) -> None:
        """No more faults or starts: wait (at most ``quiet_seconds``) for everything to finish."""
        begun = self.now()
        until = begun + self.cfg.quiet_seconds
        self.say(f"quiet phase: no more faults or starts; waiting up to {self.cfg.quiet_seconds:.0f} s")
        while self.now() < until:
            if not self.pending and not self.outstanding():
                break
            await asyncio.sleep(0.5)
        self.say(f"quiet phase over after {self.now() - begun:.1f} s: {len(self.outstanding())} workflows still "
                 f"open, {len(self.pending)} client operations still in flight")
        self.say(f"ownership: {await cluster.ownership_snapshot(self)}")

    async def wind_down(self) -> None:
        """The quiet phase, then every background task and client operation stopped."""
        await self.quiet_phase()
        await cluster.reap_dead(self, "after an exit at the end of the quiet phase")
        self.stopping.set()
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.background, *list(self.pending), return_exceptions=True)
        self.background = []

    async def check_phase(self) -> None:
        self.say("checking every acknowledged workflow")
        await check(self)
        self.say(f"check done; ownership: {await cluster.ownership_snapshot(self)}")
        await cluster.reap_dead(self, "after an exit during the check")

    async def teardown(self) -> None:
        """Stop whatever still runs, close the clients, shut the cluster down."""
        self.stopping.set()
        for task in [*self.background, *self.pending]:
            task.cancel()
        await asyncio.gather(*self.background, *list(self.pending), return_exceptions=True)
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        await cluster.shut_down(self)

    def finish(self) -> NemesisResult:
        """The verdict, said line by line; the narrative ends here."""
        verdict(self)
        self.result.elapsed = self.now()
        for line in self.result.summary().splitlines():
            self.say(line)
        self.narrator.close()
        return self.result

    def judge(self, rec: WorkflowRecord, described: Any, events: list[dict[str, Any]], check_time: float,
              bad: Callable[..., None]) -> None:
        """The invariants of one acknowledged workflow (see ``ops.nemesis.judge``)."""
        judge(self, rec, described, events, check_time, bad)


async def run_async(cfg: NemesisConfig) -> NemesisResult:
    """Run one nemesis pass inside an existing asyncio loop."""
    return await Run(cfg).execute()


def run(cfg: NemesisConfig) -> NemesisResult:
    """Run one nemesis pass to completion (its own event loop) and return what it found."""
    return asyncio.run(run_async(cfg))
