"""The journal interface: what every storage backend provides.

A ``Batch`` is one unit of durable change: journal records of one or more runs plus
the projection rows they imply (the run's visibility row, the instance's current run).
``append`` returns only once the batch is committed; backends group many concurrent
batches into one transaction (group commit), so throughput comes from batching and
durability from the commit.

Fencing (ARCHITECTURE.md, invariant 4): a batch may carry ``fence``, shard id -> the epoch
its writer believes it holds. It commits only if, inside the commit's own transaction, every
listed shard's epoch in ``shards`` still equals the fenced one; otherwise it fails alone with
``FencedError`` and writes nothing, while the other batches of its group commit normally.
An epoch changes only when a shard is claimed (``pg_shard_leases.ShardLeases.claim``), so a
node that lost a shard to another node can no longer write to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio


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
    detail: dict[str, Any] = field(default_factory=dict)  # a listing's extra columns (a standalone activity's)


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


# A filter's value, typed by the attribute: text (keyword, text, keyword_list, a datetime of a
# custom attribute), int, double (or a system datetime as epoch seconds), bool; ``in``/``not_in``
# take a list of texts.
PredicateValue = str | int | float | bool | list[str]


@dataclass(frozen=True)
class Predicate:
    """One condition of a list filter: a projection column or a custom search attribute.

    ``op`` is one of = != > >= < <= (``in``/``not_in`` for a column and a list of values).
    ``type`` is the attribute's registered type; a ``keyword_list`` attribute matches when
    its list contains the value."""

    op: str
    value: PredicateValue
    column: str | None = None
    attribute: str | None = None
    type: str = "keyword"

    def value_list(self) -> list[str]:
        """The texts an ``in``/``not_in`` condition lists."""
        if not isinstance(self.value, list):
            raise TypeError(f"the {self.op!r} operator takes a list of texts, not {self.value!r}")
        return self.value


@dataclass
class ObjectRow:
    """A small named object of a namespace (a search-attribute definition, a schedule's
    projection): ``body`` is its JSON state; a deleted object keeps its row with
    ``body["deleted"]`` so names stay reserved and audit trails resolvable."""

    namespace: str
    kind: str
    name: str
    body: dict[str, Any]
    updated_at: float


@dataclass
class Batch:
    records: list[tuple[str, int, bytes]] = field(default_factory=list)  # (run_id, jseq, cbor body)
    runs: list[RunRow] = field(default_factory=list)
    instances: list[InstanceRow] = field(default_factory=list)
    namespaces: list[NamespaceRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    objects: list[ObjectRow] = field(default_factory=list)
    # shard id -> epoch the writer holds; empty: not fenced (single node).
    fence: dict[int, int] = field(default_factory=dict)


@dataclass
class NodeRow:
    """A cluster member's heartbeat row (``nodes``)."""

    node_id: str
    advertise_url: str | None
    started_at: float | None
    heartbeat_at: float | None
    status: str


class ConflictError(Exception):
    """A record position was already taken: another writer appended to the run."""


class StoreUnavailable(Exception):
    """The store cannot be reached right now (down, restarting, connection lost): retry later.

    Whether a batch that failed this way was committed is unknown; the writer reloads the run
    from the journal (an idempotent client retry then finds what was committed)."""


class StoreMisconfigured(Exception):
    """The store refused the node's settings (credentials, database name): retrying cannot help."""


class FencedError(Exception):
    """A fenced batch was refused: the shard's epoch is no longer the one its writer holds.

    ``actual`` is the epoch found in ``shards`` (None: no such shard). Nothing of the batch
    was written. The writer has lost the shard and must stop writing to it.
    """

    def __init__(self, shard: int, expected: int, actual: int | None) -> None:
        super().__init__(f"shard {shard} is fenced: the writer holds epoch {expected}, the shard is at {actual}")
        self.shard = shard
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[type[FencedError], tuple[int, int, int | None]]:
        return (type(self), (self.shard, self.expected, self.actual))


def fence_violation(fence: dict[int, int], epochs: dict[int, int]) -> FencedError | None:
    """The first (lowest shard) mismatch between a batch's fence and the epochs read, or None."""
    for shard in sorted(fence):
        actual = epochs.get(shard)
        if actual != fence[shard]:
            return FencedError(shard, fence[shard], actual)
    return None


SHARD_COUNT_KEY = "shard_count"  # cluster_settings key


def check_shard_count(shard_count: int) -> None:
    if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
        raise ValueError(f"shard_count must be a positive integer, not {shard_count!r}")


def shard_count_mismatch(stored: int, requested: int) -> ValueError:
    return ValueError(
        f"this cluster was created with shard_count={stored}, but shard_count={requested} was requested; "
        f"the shard count is fixed at cluster creation: configure every node with shard_count={stored}"
    )


class Journal(Protocol):
    """What the runtime and the actors may call on a journal, whichever the backend.

    ``SqliteJournal`` and ``PostgresJournal`` both satisfy it (each module ends with an
    assignment mypy checks); code that takes a journal should be typed with this protocol,
    so a method used there but missing from a backend fails the type check, not a request.
    """

    @property
    def commits(self) -> int:
        """Transactions committed by the group-commit writer (for the shutdown log)."""
        ...

    @property
    def batches(self) -> int:
        """Batches those transactions carried."""
        ...

    @property
    def commit_stats(self) -> Any:
        """The group-commit writer's ``group_commit.CommitStats`` (the node's metrics read them)."""
        ...

    # --- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        """Connect and apply migrations."""
        ...

    async def run_writer(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The group-commit loop; lives in the node's root nursery (``nursery.start``)."""
        ...

    async def aclose(self) -> None: ...

    async def ping(self) -> bool:
        """True while the store answers; never raises (health checks)."""
        ...

    # --- writes --------------------------------------------------------------------

    async def append(self, batch: Batch) -> None:
        """Return once the batch is committed; ``ConflictError``, ``FencedError`` or
        ``StoreUnavailable`` otherwise."""
        ...

    async def claim_once(self, items: list[tuple[bytes, float]], purge_before: float | None) -> list[bool]:
        """Record each key until its expiry; True for the keys no one recorded before."""
        ...

    # --- reads ---------------------------------------------------------------------

    async def read_records(self, run_id: str) -> list[bytes]: ...

    async def get_run(self, run_id: str) -> RunRow | None: ...

    async def get_instance(self, namespace: str, workflow_id: str) -> InstanceRow | None: ...

    async def find_instances(self, workflow_id: str) -> list[InstanceRow]: ...

    async def list_instance_runs(self, namespace: str, workflow_id: str) -> list[RunRow]: ...

    async def list_runs(
        self,
        namespace: str,
        *,
        workflow_type: str | None = None,
        statuses: list[str] | None = None,
        query: str | None = None,
        predicates: Sequence[Predicate] = (),
        after: tuple[float, str] | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[RunRow]:
        """Newest first (started_at, run_id descending); ``after`` is the keyset of the
        previous page's last row."""
        ...

    async def runs_to_recover(self) -> list[RunRow]: ...

    async def list_namespaces(self) -> list[NamespaceRow]: ...

    async def list_objects(self, kind: str, namespace: str | None = None) -> list[ObjectRow]: ...

    async def list_workers(self) -> list[WorkerRow]: ...

    # --- retention and namespace deletion --------------------------------------------

    async def expired_runs(self, namespace: str, cutoff: float, limit: int) -> list[str]:
        """Closed runs of the namespace closed before ``cutoff``, oldest first."""
        ...

    async def purge_runs(self, namespace: str, run_ids: list[str]) -> dict[str, int]:
        """Delete closed runs and their journals: ``{"runs": n, "history_events": n}``."""
        ...

    async def delete_namespace(self, namespace: str) -> dict[str, int]:
        """Delete everything of the namespace: counts of what went, by kind."""
        ...

    # --- cluster -------------------------------------------------------------------

    async def ensure_cluster(self, shard_count: int) -> int:
        """Create the cluster's shards on first call (returns ``shard_count``); later calls
        return the stored count; a different count raises ``ValueError`` naming the stored one."""
        ...

    async def shard_epochs(self) -> dict[int, tuple[str | None, int]]:
        """shard id -> (owner node, epoch)."""
        ...

    async def clear_owner_marks(self, node_id: str, keep: list[int]) -> int:
        """Forget ``node_id`` as owner of every shard but ``keep``: how many marks went."""
        ...

    async def upsert_node(
        self, node_id: str, advertise_url: str | None, started_at: float | None, heartbeat_at: float | None,
        status: str,
    ) -> None: ...

    async def list_nodes(self) -> list[NodeRow]: ...


class ClusterJournal(Journal, Protocol):
    """A journal several nodes share (PostgreSQL): what only a cluster needs on top."""

    async def cluster_secret(self) -> bytes:
        """The key nodes sign internal requests with, made once per cluster."""
        ...

    async def lease_namespace(self) -> int:
        """The first key of this cluster's shard locks (advisory locks are per database)."""
        ...

    async def lease_sessions(self) -> set[str]:
        """Node ids whose shard-lease session is connected right now."""
        ...
