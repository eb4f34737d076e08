"""Journal records with named fields, and the one translation to and from their stored form.

A record is stored as a CBOR map whose keys are short letters, chosen when the first journals
were written: ``t`` (kind), ``h`` (history sequence), ``at`` (instant), ``p`` (payload), ``x``
(the server's own extra data), ``wt`` (the workflow task that wrote it), ``cmd`` (the command
id). Journals already written must load unchanged, and a record written today must be byte for
byte what it always was, so the letters stay in storage. Code reads and builds ``Record``
objects instead: ``to_stored`` and ``from_stored`` are the only places that know the letters.

Two kinds of records share the stream. A *history event* has a sequence: it is one of the
PascalCase events the SDK replays, with its payload. An *internal transition* has none: a
lower-case kind (``wt_claim``, ``act_release``...) and its own fields, kept in ``data`` under
their stored names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The stored letters; nothing outside this module uses them.
_KIND = "t"
_SEQUENCE = "h"
_AT = "at"
_PAYLOAD = "p"
_EXTRA = "x"
_WORKFLOW_TASK_ID = "wt"
_COMMAND_ID = "cmd"


@dataclass(frozen=True, slots=True)
class Record:
    """One journal record.

    ``payload`` is the history event's payload (empty for an internal transition); ``extra``
    is what the server keeps beside it and never shows (an activity's queue and policy, a
    created run's start metadata...; empty when there is none); ``data`` holds an internal
    transition's fields."""

    kind: str
    at: float
    sequence: int | None = None  # the history sequence; None for an internal transition
    payload: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    workflow_task_id: str | None = None  # the workflow task whose completion wrote the event
    command_id: str | None = None  # the control-plane or update command that caused it
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_history(self) -> bool:
        return self.sequence is not None


def history_event(
    kind: str,
    sequence: int,
    at: float,
    payload: dict[str, Any],
    extra: dict[str, Any] | None = None,
    workflow_task_id: str | None = None,
    command_id: str | None = None,
) -> Record:
    """A history event; empty ``extra``, task and command ids are not stored (as always)."""
    return Record(kind, at, sequence, payload, extra or {}, workflow_task_id or None, command_id or None)


def internal_record(kind: str, at: float, /, **data: Any) -> Record:
    """An internal transition with its fields, stored under these names in this order."""
    return Record(kind, at, data=data)


def to_stored(record: Record) -> dict[str, Any]:
    """The map the journal stores, keys in the order every writer has always used: kind,
    sequence, instant, payload, extra, workflow task, command, then an internal record's fields."""
    stored: dict[str, Any] = {_KIND: record.kind}
    if record.sequence is not None:
        stored[_SEQUENCE] = record.sequence
    stored[_AT] = record.at
    if record.sequence is not None:
        stored[_PAYLOAD] = record.payload
        if record.extra:
            stored[_EXTRA] = record.extra
        if record.workflow_task_id is not None:
            stored[_WORKFLOW_TASK_ID] = record.workflow_task_id
        if record.command_id is not None:
            stored[_COMMAND_ID] = record.command_id
    stored.update(record.data)
    return stored


def from_stored(stored: dict[str, Any]) -> Record:
    """A stored map as a Record. A history event's other keys (none are written) and an
    internal transition's fields land in ``data``, so nothing stored is lost."""
    fields = dict(stored)
    kind = fields.pop(_KIND)
    at = fields.pop(_AT)
    sequence = fields.pop(_SEQUENCE, None)
    if sequence is None:
        return Record(kind, at, data=fields)
    return Record(
        kind,
        at,
        sequence,
        payload=fields.pop(_PAYLOAD, None) or {},
        extra=fields.pop(_EXTRA, None) or {},
        workflow_task_id=fields.pop(_WORKFLOW_TASK_ID, None),
        command_id=fields.pop(_COMMAND_ID, None),
        data=fields,
    )
