"""The journal interface: what every storage backend provides.

A ``Batch`` is one unit of durable change: journal records of one or more runs plus
the projection rows they imply (the run's visibility row, the instance's current run).
``append`` returns only once the batch is committed; backends group many concurrent
batches into one transaction (group commit), so throughput comes from batching and
durability from the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class RunRow:
    run_id: str
    namespace: str
    workflow_id: str
    run_number: int
    workflow_type: str
    task_queue: str | None
    status: str
    closed_reason: str | None
    business_key: str | None
    started_at: float
    closed_at: float | None
    wake_at: float | None
    attention: bool
    last_seq: int
    search_attributes: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)


@dataclass
class InstanceRow:
    namespace: str
    workflow_id: str
    workflow_type: str
    current_run_id: str
    run_count: int
    created_at: float


@dataclass
class NamespaceRow:
    name: str
    description: str | None
    retention_days: int
    status: str
    created_at: float
    updated_at: float


@dataclass
class WorkerRow:
    namespace: str
    worker_id: str
    task_queue: str
    runtime: str
    registered_at: float
    last_seen: float
    info: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class Batch:
    records: list[tuple[str, int, bytes]] = field(default_factory=list)  # (run_id, jseq, cbor body)
    runs: list[RunRow] = field(default_factory=list)
    instances: list[InstanceRow] = field(default_factory=list)
    namespaces: list[NamespaceRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)


class ConflictError(Exception):
    """A record position was already taken: another writer appended to the run."""


class Journal(Protocol):
    async def append(self, batch: Batch) -> None: ...

    async def read_records(self, run_id: str) -> list[bytes]: ...

    async def get_run(self, run_id: str) -> RunRow | None: ...

    async def get_instance(self, namespace: str, workflow_id: str) -> InstanceRow | None: ...

    async def find_instances(self, workflow_id: str) -> list[InstanceRow]: ...

    async def list_instance_runs(self, namespace: str, workflow_id: str) -> list[RunRow]: ...

    async def list_runs(
        self, namespace: str, *, workflow_type: str | None, statuses: list[str] | None, query: str | None,
        offset: int, limit: int,
    ) -> list[RunRow]: ...

    async def runs_to_recover(self) -> list[RunRow]: ...

    async def list_namespaces(self) -> list[NamespaceRow]: ...

    async def list_workers(self) -> list[WorkerRow]: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...
