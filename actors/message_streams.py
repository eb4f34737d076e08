"""Message streams (extended spec §7.1): durable, ordered, deduplicated input to a workflow.

A client appends a message to a named stream of a workflow instance; the workflow receives the
messages once each, in append order, across replays and continue-as-new. The wire form is the
SDK's: each message reaches the run as a ``SignalReceived`` of a reserved name whose argument
carries the stream, the message id (the idempotency key), its position (dense from 1 per stream of
the instance, never reused) and the payload. Completions report how far the workflow consumed
(``message_stream_cursors``); a continuation starts with each stream's cursor and the messages
above it, before any other signal.

Pure functions over the run's state; the actor commits what they return.
"""

from __future__ import annotations

import re
from typing import Any

from persistence import avro

from .emit import Emitter
from .errors import CommandError
from .records import Record, history_event, internal_record
from .run_state import RunState

RESERVED = "__durable_workflow_message_stream"
SCHEMA = "durable-workflow.v2.message-stream.message"
CURSOR_SCHEMA = "durable-workflow.v2.message-stream.cursor"
NAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_MESSAGE_ID_BYTES = 255


def check_name(stream: str) -> str | None:
    """None when the stream name is the SDK's shape, else what is wrong with it."""
    if not NAME.fullmatch(stream):
        return "A stream name is 1 to 128 characters of letters, digits and . _ : -"
    return None


def _signal_payload(state: RunState, arguments: list[dict[str, Any]], command_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "signal_name": RESERVED, "payload_codec": "avro", "signal_id": command_id, "workflow_command_id": command_id,
        "workflow_instance_id": state.meta["workflow_id"], "workflow_run_id": state.run_id, "arguments": avro.encode(arguments),
    }
    if state.cond is not None:
        payload["workflow_sequence"] = state.cond["seq"]
    return payload


def _deliverable(state: RunState, stream: str) -> bool:
    """A message is recorded only into a wait on its stream that no signal has woken yet.

    The SDK's replay applies a signal recorded before a run's first wait *at* that wait, and a
    second signal after a wait at the *next* wait, while the task that first sees such a signal
    applies it at once; for a wait whose key holds the stream's cursor the two disagree. One
    message per wait, recorded while that wait is open, replays the same on every task."""
    cond = state.cond
    key = cond.get("key") if cond is not None else None
    return isinstance(key, str) and key.startswith(f"message-stream:{stream}:") and not cond.get("received")  # type: ignore[union-attr]


def _message_event(em: Emitter, state: RunState, stream: str, message: dict[str, Any], command_id: str, sequence: int | None) -> None:
    body = [{"schema": SCHEMA, "stream_name": stream, "message_id": message["id"], "position": message["position"],
             "payload_envelope": message["payload"]}]
    payload = _signal_payload(state, body, command_id)
    if sequence is not None:
        payload["workflow_sequence"] = sequence
    em.event("SignalReceived", payload, command_id=command_id, extra={"msg": {"stream": stream, **message}})


def append(state: RunState, stream: str, message_id: str, payload: dict[str, Any], command_id: str,
           now: float) -> tuple[Emitter, int, bool]:
    """The message's position and whether it was a duplicate (then nothing is recorded). It is
    recorded at once into its stream's open wait, or held (durably) until the next one opens."""
    known = state.streams.get(stream, {})
    position = (known.get("ids") or {}).get(message_id)
    em = Emitter(state, now)
    if position is not None:
        return em, position, True
    position = int(known.get("next", 1))
    message = {"id": message_id, "position": position, "payload": payload}
    if _deliverable(state, stream):
        _message_event(em, state, stream, message, command_id, None)
    else:
        em.internal("msg_held", stream=stream, **message)
    return em, position, False


def release(state: RunState, em: Emitter) -> None:
    """A completion that opened a wait on a stream gets that stream's oldest held message."""
    opened = next((r for r in reversed(em.records) if r.kind == "ConditionWaitOpened"), None)
    key = opened.payload.get("condition_key") if opened is not None else None
    if not isinstance(key, str) or not key.startswith("message-stream:") or key.count(":") < 2:
        return
    stream = key[len("message-stream:"):key.rindex(":")]
    held = (state.streams.get(stream) or {}).get("held") or []
    if held and opened is not None:
        message = held[0]
        _message_event(em, state, stream, message, f"{state.run_id}-ms-{stream}-{message['position']}", opened.payload["sequence"])


def parse_cursors(raw: Any) -> list[tuple[str, int]]:
    """A completion's ``message_stream_cursors``; 422 ``validation_failed`` when malformed."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > 1000:
        raise CommandError(422, "validation_failed", "message_stream_cursors must be a list.",
                           {"message_stream_cursors": ["must be a list of {stream_name, through_position}"]})
    out = []
    for i, item in enumerate(raw):
        name = item.get("stream_name") if isinstance(item, dict) else None
        through = item.get("through_position") if isinstance(item, dict) else None
        if not isinstance(name, str) or check_name(name) or not isinstance(through, int) or isinstance(through, bool) or through < 0:
            raise CommandError(422, "validation_failed", "A message stream cursor names a stream and a position >= 0.",
                               {f"message_stream_cursors.{i}": ["needs stream_name and through_position >= 0"]})
        out.append((name, through))
    return out


def advance(state: RunState, em: Emitter, cursors: list[tuple[str, int]]) -> None:
    """Keep each stream's consumed position (monotonic; never past what was appended)."""
    for name, through in cursors:
        known = state.streams.get(name)
        if known is None:
            continue
        through = min(through, int(known.get("next", 1)) - 1)
        if through > int(known.get("cursor", 0)):
            em.internal("msg_cursor", stream=name, through=through)


def carry(state: RunState, em: Emitter) -> dict[str, Any]:
    """What a continuation inherits: every stream's counter, ids, cursor (as the completion that
    continues it advanced them) and the messages above the cursor."""
    advanced = {r.data["stream"]: r.data["through"] for r in em.records if r.kind == "msg_cursor"}
    out = {}
    for name, s in state.streams.items():
        cursor = max(int(s.get("cursor", 0)), advanced.get(name, 0))
        pending = [m for p, m in sorted((s.get("pending") or {}).items()) if p > cursor] + list(s.get("held") or [])
        out[name] = {"next": s.get("next", 1), "ids": dict(s.get("ids") or {}), "cursor": cursor, "pending": pending}
    return out


def seed_records(meta: dict[str, Any], sequence: int, now: float) -> list[Record]:
    """A continuation's first records: each stream's cursor (a signal), and its unread messages held."""
    records: list[Record] = []
    base = {"signal_name": RESERVED, "payload_codec": "avro", "workflow_instance_id": meta["workflow_id"],
            "workflow_run_id": meta["run_id"]}
    for name, s in sorted((meta.get("message_streams") or {}).items()):
        command = f"{meta['run_id']}-ms-{name}"
        cursor = [{"schema": CURSOR_SCHEMA, "stream_name": name, "through_position": s.get("cursor", 0)}]
        records.append(history_event("SignalReceived", sequence, now, {
            **base, "signal_id": command, "workflow_command_id": command, "arguments": avro.encode(cursor),
        }, {"msg_seed": {"stream": name, "next": s.get("next", 1), "ids": s.get("ids") or {}, "cursor": s.get("cursor", 0)}}, None,
            command))
        sequence += 1
        for message in s.get("pending") or []:  # unread: held until the new run waits on the stream
            records.append(internal_record("msg_held", now, stream=name, **message))
    return records
