"""Building the records one decision appends, and the effects it has beyond its run.

A decision never mutates state: it returns records, the runs it creates, and effects
the actor performs after the commit (tell a parent its child closed, apply a parent-close
policy). The actor folds the records into its state as it builds the journal batch (the run's
row needs the new state) and answers nobody before the commit: readers reach the state only
through the actor's mailbox, and a failed append reloads the state from the journal. A
created run's first records are written by that run's own actor (``StartRun``); the record
that created it carries its start metadata until the new run confirms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from persistence.ids import iso
from persistence.journal import InstanceRow

from .id_source import RANDOM_IDS, IdSource
from .records import Record, history_event, internal_record
from .run_state import RunState

AVRO_NULL_BLOB = "wwHioz3/VYAiNwA="


@dataclass
class Effect:
    kind: str  # notify_parent | close_child
    run_id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewRun:
    """A run created by this decision (child or continue-as-new); its own actor writes its start."""

    run_id: str
    meta: dict[str, Any]


class Emitter:
    def __init__(
        self, state: RunState, now: float, workflow_task_id: str | None = None, ids: IdSource = RANDOM_IDS
    ) -> None:
        self.state = state
        self.ids = ids  # where the decision's new ids come from
        self.now = now
        self.next_sequence = state.next_h
        self.records: list[Record] = []
        self.new_runs: list[NewRun] = []
        self.instances: list[InstanceRow] = []  # instance rows this decision writes (a run's start)
        self.effects: list[Effect] = []
        self.workflow_task_id = workflow_task_id  # the task whose completion this decision is

    def event(
        self, kind: str, payload: dict[str, Any], extra: dict[str, Any] | None = None, command_id: str | None = None
    ) -> Record:
        """Append the next history event."""
        record = history_event(kind, self.next_sequence, self.now, payload, extra, self.workflow_task_id, command_id)
        self.next_sequence += 1
        self.records.append(record)
        return record

    def internal(self, kind: str, /, **data: Any) -> None:
        """Append an internal transition (no history) with its fields."""
        self.records.append(internal_record(kind, self.now, **data))

    def ts(self, value: float | None = None) -> str:
        return iso(self.now if value is None else value)  # type: ignore[return-value]


def par_fields(par: dict[str, Any] | None) -> dict[str, Any]:
    """The parallel metadata copied onto every event of a group member."""
    if not par:
        return {}
    return dict(par)


def blob_of(env: Any) -> Any:
    """History payloads carry bare blobs; external references pass through verbatim."""
    if env is None:
        return None
    if isinstance(env, dict):
        if "blob" in env:
            return env["blob"]
        return env
    return env


def new_run_meta(
    *,
    run_id: str,
    namespace: str,
    workflow_id: str,
    workflow_type: str,
    task_queue: str | None,
    run_number: int,
    arguments: Any,
    now: float,
    execution_timeout: int | None,
    run_timeout: int | None,
    execution_deadline: float | None = None,
    business_key: str | None = None,
    memo: dict[str, Any] | None = None,
    search_attributes: dict[str, Any] | None = None,
    parent: dict[str, Any] | None = None,
    continued_from: str | None = None,
    command_id: str | None = None,
    shard: int = 0,
    shard_count: int = 64,
) -> dict[str, Any]:
    if execution_deadline is None and execution_timeout:
        execution_deadline = now + execution_timeout
    return {
        "run_id": run_id,
        "namespace": namespace,
        "workflow_id": workflow_id,
        "workflow_type": workflow_type,
        "task_queue": task_queue,
        "run_number": run_number,
        "arguments": arguments,
        "started_at": now,
        "execution_timeout": execution_timeout,
        "run_timeout": run_timeout,
        "execution_deadline": execution_deadline,
        "run_deadline": now + run_timeout if run_timeout else None,
        "business_key": business_key,
        "memo": memo or {},
        "search_attributes": search_attributes or {},
        "parent": parent,
        "continued_from": continued_from,
        "command_id": command_id,
        "shard": shard,
        "shard_count": shard_count,
    }


def started_records(meta: dict[str, Any], now: float, *, accepted: bool) -> list[Record]:
    """The opening records of a run: StartAccepted (control-plane starts only) then WorkflowStarted."""
    common = {
        "workflow_type": meta["workflow_type"],
        "workflow_class": meta["workflow_type"],
        "workflow_instance_id": meta["workflow_id"],
        "workflow_run_id": meta["run_id"],
    }
    optional = {
        "workflow_command_id": meta.get("command_id"),
        "business_key": meta.get("business_key"),
        "memo": meta.get("memo") or None,
        "search_attributes": meta.get("search_attributes") or None,
    }
    common.update({k: v for k, v in optional.items() if v is not None})
    common.update({k: v for k, v in (meta.get("schedule") or {}).items() if v is not None})  # started by a schedule
    records: list[Record] = []
    sequence = 1
    if accepted:
        records.append(history_event("StartAccepted", sequence, now, {**common, "outcome": "started_new"}, {"meta": meta}))
        sequence += 1
    started = dict(common)
    for key, src in (("execution_timeout_seconds", "execution_timeout"), ("run_timeout_seconds", "run_timeout")):
        if meta.get(src):
            started[key] = meta[src]
    if meta.get("execution_deadline"):
        started["execution_deadline_at"] = iso(meta["execution_deadline"])
    if meta.get("run_deadline"):
        started["run_deadline_at"] = iso(meta["run_deadline"])
    parent = meta.get("parent")
    if parent:
        started.update(
            {
                "parent_workflow_instance_id": parent["workflow_id"],
                "parent_workflow_run_id": parent["run_id"],
                "parent_sequence": parent["sequence"],
            }
        )
    if meta.get("continued_from"):
        started["continued_from_run_id"] = meta["continued_from"]
    if meta.get("redrive"):
        started["redriven_from_run_id"] = meta["redrive"]["from"]
    if meta.get("retry_attempt"):  # a child run started again by its parent's retry policy (extended spec §6)
        started["retry_attempt"] = meta["retry_attempt"]
        started["retry_of_child_workflow_run_id"] = meta["retry_of"]
    if meta.get("arguments") is not None:
        started["input"] = meta["arguments"]
    records.append(history_event("WorkflowStarted", sequence, now, started, None if accepted else {"meta": meta}))
    return records
