"""One node: the journal, the engine and the services built on them, under one nursery."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio

from actors.clock import Clock, SystemClock
from actors.validation_tasks import NEED as vt_need
from persistence.journal import StoreMisconfigured, StoreUnavailable
from persistence.sqlite_journal import SqliteJournal

from .build_ids import BuildIdService
from .config import Config
from .engine import Engine
from .errors import ConfigurationError
from .metrics import node_registry
from .namespaces import NamespaceService
from .operator_views import OperatorViews
from .payload_storage import PayloadStorage, RuntimeTransport
from .queries import QueryService
from .repair_loop import RepairLoop
from .replay_guard import ReplayGuard
from .retention import RetentionService
from .run_operations import RunOperations
from .schedules import ScheduleService
from .search_attributes import SearchAttributeService
from .standalone_activities import StandaloneActivityService
from .system_metrics import SystemMetrics
from .system_ops import SystemOps
from .update_validation import UpdateValidationService
from .worker_sessions import WorkerSessionService
from .workers import WorkerService
from .workflow_streams import WorkflowStreamService
from .workflows import WorkflowService

log = logging.getLogger("dw.node")


def redact(dsn: str) -> str:
    """A DSN fit for logs: the password never leaves the process."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def open_journal(cfg: Config) -> Any:
    if cfg.database:
        if not cfg.database.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"unsupported database URL {redact(cfg.database)!r}; use postgresql://user@host:port/dbname")
        from persistence.postgres_journal import PostgresJournal

        return PostgresJournal(cfg.database, application_name=f"dw-journal:{cfg.node_id}")
    return SqliteJournal(cfg.sqlite_path, synchronous=cfg.synchronous)


@asynccontextmanager
async def journal_loop(cfg: Config) -> AsyncIterator[None]:
    """The PostgreSQL journal runs asyncpg through trio-asyncio: give it an asyncio loop."""
    if not cfg.database:
        yield
        return
    import trio_asyncio

    async with trio_asyncio.open_loop():
        yield


class Node:
    def __init__(self, cfg: Config, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.journal = open_journal(cfg)
        self.engine = Engine(
            self.journal, self.clock, idle_seconds=cfg.idle_seconds, wt_lease=cfg.workflow_task_lease, act_lease=cfg.activity_lease,
            shard_count=cfg.shard_count,
        )
        self.engine.limits = cfg.limits
        self.workflows = WorkflowService(self.engine)
        self.streams = WorkflowStreamService(self.workflows, cfg.max_parked_stream_reads)
        self.activities = StandaloneActivityService(self.engine, self.workflows)
        self.operations = RunOperations(self.engine, self.workflows)
        self.workers = WorkerService(self.engine, stale_after=cfg.worker_stale_after)
        self.payloads = PayloadStorage(self.engine)
        self.transport = RuntimeTransport(self.payloads)
        self.builds = BuildIdService(self.engine, self.workers)
        self.sessions = WorkerSessionService(self.engine, self.workers)
        self.workers.sessions = self.sessions
        self.workers.draining = self.builds.draining
        self.workflows.builds = self.builds
        self.workflows.contracts = self.workers.declared
        self.validation = UpdateValidationService(self.engine, self.workers, timeout=min(cfg.query_timeout, 55.0))
        self.workflows.validation = self.validation
        self.workers.special_claims[vt_need] = self.validation.claim
        self.queries = QueryService(
            self.engine, self.workflows, self.workers,
            timeout=min(cfg.query_timeout, 55.0), max_pending=cfg.query_max_pending,
        )
        self.search_attributes = SearchAttributeService(self.engine)
        self.operator = OperatorViews(self.engine, self.workers)
        self.system = SystemOps(self.engine)
        self.system_metrics = SystemMetrics(self.engine, self.workers, self.system)
        self.repair = RepairLoop(self.engine, self.system)
        self.schedules = ScheduleService(self.engine, self.workflows, max_memo_bytes=cfg.max_memo_bytes)
        self.engine.shard_hooks.append(self.schedules)
        self.workflows.search_attributes = self.search_attributes
        self.namespaces = NamespaceService(self.engine, cfg.default_namespace, cfg.history_retention_days)
        self.namespaces.storage_policy = self.payloads.policy
        self.retention = RetentionService(self.engine, self.namespaces, interval=cfg.retention_interval)
        self.replay = ReplayGuard(self.journal, self.clock)
        self.started_at = self.clock.now()
        self.shard_manager: Any = None
        self.metrics_registry, self.request_metrics = node_registry(self) if cfg.metrics_enabled else (None, None)

    async def _load_directories(self) -> None:
        await self.namespaces.load()
        if await self.namespaces.ensure_default():
            log.info("created the %r namespace", self.cfg.default_namespace)
        await self.workers.load()
        await self.search_attributes.load()
        await self.payloads.load()

    @property
    def store_description(self) -> str:
        return store_description(self.cfg)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Open the journal, start the writer and the engine, load directories; then serve forever.

        With the PostgreSQL journal the caller must run this, and every task that touches
        the journal (the HTTP handlers too), inside ``journal_loop(cfg)``.
        """
        await until_reachable("opening the journal", self.journal.open)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.journal.run_writer)
                await nursery.start(self.replay.run)
                await until_reachable("loading namespaces, workers and search attributes", self._load_directories)
                if self.cfg.database:
                    from .peers import Peers
                    from .shard_manager import ShardManager

                    self.engine.owned = {}  # clustered: shards are adopted as they are claimed
                    secret = os.environ.get("DW_CLUSTER_SECRET", "").encode() or await until_reachable(
                        "reading the cluster secret", self.journal.cluster_secret
                    )
                    self.engine.peers = Peers(self.cfg.node_id, secret, self.clock, self.started_at)
                    await nursery.start(self.engine.peers.probe_loop)
                    if not self.cfg.advertise_url:
                        log.warning("no --advertise-url: other nodes cannot forward requests to %s", self.cfg.node_id)
                    await nursery.start(self.engine.run)
                    manager = ShardManager(
                        self.engine, self.journal, self.cfg.database, self.cfg.node_id,
                        self.cfg.advertise_url, self.cfg.shard_count, started_at=self.started_at,
                    )
                    self.shard_manager = manager  # its counters feed the metrics
                    await nursery.start(manager.run)
                else:
                    await nursery.start(self.engine.run)
                await nursery.start(self.schedules.run)
                await nursery.start(self.retention.run)
                await nursery.start(self.repair.run)
                task_status.started()
                await trio.sleep_forever()
        finally:
            if self.engine.peers is not None:
                with trio.CancelScope(shield=True):
                    await self.engine.peers.aclose()
            log.info("journal: %d batches in %d commits", self.journal.batches, self.journal.commits)
            started = time.monotonic()
            await self.journal.aclose()
            log.info("journal closed in %.1fs", time.monotonic() - started)


async def until_reachable(what: str, step: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``step`` until the store answers: an unreachable database is waited out (a node
    never exits because of it), settings it refuses end the process."""
    backoff = 0.5
    while True:
        try:
            return await step()
        except StoreMisconfigured as exc:
            raise ConfigurationError(str(exc)) from None
        except StoreUnavailable as exc:
            log.warning("%s: %s; retrying in %.1fs", what, exc, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def store_description(cfg: Config) -> str:
    return f"postgresql:{redact(cfg.database)}" if cfg.database else f"sqlite:{cfg.sqlite_path}"


async def bootstrap(cfg: Config) -> list[str]:
    """Create the schema and the default namespace without serving (for deployments)."""
    async with journal_loop(cfg):
        return await _bootstrap(cfg)


async def _bootstrap(cfg: Config) -> list[str]:
    node = Node(cfg)
    done: list[str] = []
    await node.journal.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.journal.run_writer)
            await node.namespaces.load()
            if await node.namespaces.ensure_default():
                done.append(f"created namespace {cfg.default_namespace}")
            nursery.cancel_scope.cancel()
    finally:
        await node.journal.aclose()
    done.append(f"schema ready at {node.store_description}")
    return done


async def cluster_status(cfg: Config) -> dict[str, Any]:
    """What ``dw-server cluster status`` prints, read from the journal without joining the cluster."""
    from .membership import cluster_view

    async with journal_loop(cfg):
        journal = open_journal(cfg)
        await journal.open()
        try:
            count = cfg.shard_count
            if cfg.database:
                epochs = await journal.shard_epochs()
                count = len(epochs) or count
            return await cluster_view(
                journal, node_id=cfg.node_id, shard_count=count, clustered=bool(cfg.database), now=SystemClock().now()
            )
        finally:
            await journal.aclose()
