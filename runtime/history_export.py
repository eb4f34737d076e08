"""The replay bundle of one run (control-plane §5.2): checksummed, optionally signed.

Plain functions over a run's state and events, so the canonical form and the integrity
block are unit-tested without a server. The canonical JSON is what the SDK's
``history_bundle_verify`` recomputes: keys sorted recursively, compact separators, UTF-8
as is. The signature is HMAC-SHA256 (via ``cryptography``) over that same text, made only
when an operator configured a key, so a bundle handed to an auditor proves where it came from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from persistence import avro
from persistence.ids import iso
from persistence.vocabulary import BUCKET_OF, TERMINAL_STATUSES

SCHEMA = "durable-workflow.v2.history-export"


def canonical_json(value: Any) -> str:
    return json.dumps(_sorted(value), separators=(",", ":"), ensure_ascii=False)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def integrity(bundle: dict[str, Any], signing_key: bytes | None, key_id: str | None) -> dict[str, Any]:
    text = canonical_json({k: v for k, v in bundle.items() if k != "integrity"}).encode()
    block: dict[str, Any] = {
        "canonicalization": "json-recursive-ksort-v1",
        "checksum_algorithm": "sha256",
        "checksum": hashlib.sha256(text).hexdigest(),
        "signature_algorithm": None,
        "signature": None,
        "key_id": None,
    }
    if signing_key:
        mac = HMAC(signing_key, hashes.SHA256())
        mac.update(text)
        block.update(signature_algorithm="hmac-sha256", signature=mac.finalize().hex(), key_id=key_id)
    return block


def _manifest_entry(path: str, blob: Any) -> dict[str, Any]:
    available = isinstance(blob, str) and bool(blob)
    return {
        "path": path,
        "codec": "avro",
        "available": available,
        "redacted": False,
        "encoding": "base64" if available else None,
        "avro_framing": "single_object" if available else None,
        "avro_prefix_hex": "c301" if available else None,
        "writer_schema": avro.VALUE_SCHEMA_JSON if available else None,
        "writer_schema_fingerprint": f"crc64-avro:{avro.FINGERPRINT_HEX}" if available else None,
        "diagnostic": None if available else "payload_missing",
    }


def _blob(envelope: Any) -> str | None:
    if isinstance(envelope, dict):
        blob = envelope.get("blob")
        return blob if isinstance(blob, str) else None
    return envelope if isinstance(envelope, str) else None


def build(
    *,
    run_id: str,
    meta: dict[str, Any],
    status: str,
    closed_reason: str | None,
    closed_at: float | None,
    last_progress_at: float | None,
    output: Any,
    search_attributes: dict[str, Any],
    events: list[dict[str, Any]],
    current_run_id: str,
    now: float,
    heartbeats: dict[str, dict[str, Any]] | None = None,
    signing_key: bytes | None = None,
    key_id: str | None = None,
) -> dict[str, Any]:
    """The whole bundle: the run's block, its payloads, the projections of its events, the
    codec and manifest blocks, and last the integrity block over all of them."""
    last_seq = events[-1]["sequence"] if events else 0
    arguments, result = _blob(meta.get("arguments")), _blob(output)
    workflow = _workflow(
        run_id, meta, status, closed_reason, closed_at, last_progress_at, search_attributes, current_run_id, last_seq
    )
    archived = next((e["payload"] for e in reversed(events) if e["event_type"] == "WorkflowArchived"), None)
    if archived is not None:  # an operator archived the closed run (extended §9.3)
        workflow.update(archived_at=archived.get("archived_at"), archive_command_id=archived.get("workflow_command_id"),
                        archive_reason=archived.get("reason"))
    bundle: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": 1,
        "exported_at": iso(now),
        "dedupe_key": f"{run_id}:{last_seq}:{iso(last_progress_at) or ''}",
        "history_complete": status in TERMINAL_STATUSES,
        "workflow": workflow,
        "payloads": _payloads(status, arguments, result),
        "summary": None,
        "selected_run": {"source": "journal", "run_id": run_id},
        "history_events": _history(events),
        "waits": [],
        "timeline": [],
        "linked_intakes_scope": None,
        "linked_intakes": [],
        "commands": _commands(events),
        "signals": _signals(events),
        "updates": [],
        "tasks": [],
        "activities": _activities(events, heartbeats or {}),
        "timers": _timers(events),
        "failures": _failures(events),
        "links": {"projection_source": "history", "parents": _parents(meta), "children": _children(events)},
        "redaction": {"applied": False, "policy": None, "paths": []},
        "codec_schemas": _codec_schemas(),
        "payload_manifest": {"version": 1, "entries": _manifest(status, arguments, result)},
    }
    bundle["integrity"] = integrity(bundle, signing_key, key_id)
    return bundle


def _workflow(
    run_id: str,
    meta: dict[str, Any],
    status: str,
    closed_reason: str | None,
    closed_at: float | None,
    last_progress_at: float | None,
    search_attributes: dict[str, Any],
    current_run_id: str,
    last_seq: int,
) -> dict[str, Any]:
    """The run itself: identity, type, status and times, as the SDK's bundle reader expects them."""
    return {
        "instance_id": meta["workflow_id"],
        "run_id": run_id,
        "run_number": meta.get("run_number", 1),
        "is_current_run": run_id == current_run_id,
        "current_run_id": current_run_id,
        "current_run_source": "instance",
        "workflow_type": meta["workflow_type"],
        "workflow_class": meta["workflow_type"],
        "business_key": meta.get("business_key"),
        "visibility_labels": None,
        "memo": meta.get("memo") or {},
        "search_attributes": search_attributes,
        "status": status,
        "status_bucket": BUCKET_OF.get(status, "running"),
        "closed_reason": closed_reason,
        "archived_at": None,
        "archive_command_id": None,
        "archive_reason": None,
        "compatibility": meta.get("compatibility"),
        "connection": None,
        "queue": meta.get("task_queue"),
        "last_history_sequence": last_seq,
        "started_at": iso(meta.get("started_at")),
        "closed_at": iso(closed_at),
        "last_progress_at": iso(last_progress_at),
    }


def _payloads(status: str, arguments: str | None, result: str | None) -> dict[str, Any]:
    """The run's input and, once completed, its output (Avro blobs as stored)."""
    return {
        "codec": "avro",
        "arguments": {"available": arguments is not None, "data": arguments},
        "output": {"available": status == "completed" and result is not None, "data": result if status == "completed" else None},
    }


def _history(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": e["id"],
            "sequence": e["sequence"],
            "type": e["event_type"],
            "workflow_task_id": e.get("workflow_task_id"),
            "workflow_command_id": e.get("workflow_command_id"),
            "recorded_at": e["recorded_at"],
            "payload": e["payload"],
        }
        for e in events
    ]


def _signals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": e["payload"].get("signal_id") or e["id"],
            "name": e["payload"].get("signal_name"),
            "sequence": e["sequence"],
            "workflow_command_id": e.get("workflow_command_id"),
            "arguments": e["payload"].get("arguments"),
            "received_at": e["recorded_at"],
        }
        for e in events
        if e["event_type"] == "SignalReceived"
    ]


def _commands(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The client commands the history applied (start, signal, cancel, terminate)."""
    return [
        {"id": e["workflow_command_id"], "type": e["event_type"], "sequence": e["sequence"], "status": "applied"}
        for e in events
        if e.get("workflow_command_id") and e["event_type"] in ("StartAccepted", "SignalReceived", "CancelRequested", "TerminateRequested")
    ]


def _timers(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"sequence": e["payload"].get("sequence"), "timer_id": e["payload"].get("timer_id"), "type": e["event_type"],
         "fire_at": e["payload"].get("fire_at")}
        for e in events
        if e["event_type"] in ("TimerScheduled", "TimerFired", "TimerCancelled")
    ]


def _activities(events: list[dict[str, Any]], heartbeats: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per activity execution: its events, its attempts and their latest heartbeat
    progress (extended spec §14; progress is visibility only, never replayed)."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        p = e["payload"]
        exec_id = p.get("activity_execution_id")
        if not e["event_type"].startswith("Activity") or not exec_id:
            continue
        entry = out.setdefault(exec_id, {
            "activity_execution_id": exec_id, "sequence": p.get("sequence"), "activity_type": p.get("activity_type"),
            "execution_mode": p.get("execution_mode", "remote"), "events": [], "attempts": {},
            "last_heartbeat_at": None, "last_heartbeat_progress": None,
        })
        entry["events"].append(e["event_type"])
        entry["status"] = e["event_type"]
        n = p.get("attempt_number")
        if isinstance(n, int) and n > 0:
            entry["attempts"].setdefault(n, {"attempt_number": n, "activity_attempt_id": p.get("activity_attempt_id"),
                                             "last_heartbeat_at": None, "last_heartbeat_progress": None})
    for exec_id, entry in out.items():
        beat = heartbeats.get(exec_id)
        if beat:
            entry["last_heartbeat_at"] = iso(beat.get("last_heartbeat_at"))
            entry["last_heartbeat_progress"] = beat.get("last_heartbeat_progress")
            for n, attempt in (beat.get("attempts") or {}).items():
                slot = entry["attempts"].setdefault(n, {"attempt_number": n, "activity_attempt_id": f"{exec_id}.{n}"})
                slot.update(last_heartbeat_at=iso(attempt["last_heartbeat_at"]), last_heartbeat_progress=attempt["last_heartbeat_progress"])
        entry["attempts"] = [entry["attempts"][n] for n in sorted(entry["attempts"])]
    return list(out.values())


def _failures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": e["payload"].get("failure_id"), "type": e["event_type"], "message": e["payload"].get("message"),
         "sequence": e["sequence"]}
        for e in events
        if e["payload"].get("failure_id")
    ]


def _children(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"child_workflow_instance_id": e["payload"].get("child_workflow_instance_id"),
         "child_workflow_run_id": e["payload"].get("child_workflow_run_id")}
        for e in events
        if e["event_type"] == "ChildRunStarted"
    ]


def _parents(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The parent workflow that started this run, and the run it continued from."""
    parents = []
    parent = meta.get("parent")
    if parent:
        parents.append({"parent_workflow_instance_id": parent["workflow_id"], "parent_workflow_run_id": parent["run_id"]})
    if meta.get("continued_from"):
        parents.append({"continued_from_run_id": meta["continued_from"]})
    return parents


def _manifest(status: str, arguments: str | None, result: str | None) -> list[dict[str, Any]]:
    manifest = [_manifest_entry("payloads.arguments.data", arguments)]
    if status == "completed" and result is not None:
        manifest.append(_manifest_entry("payloads.output.data", result))
    return manifest


def _codec_schemas() -> dict[str, Any]:
    """The one Avro writer schema every payload of this server is encoded with."""
    return {
        "avro": {
            "encoding": "base64-avro-single-object",
            "framing": "single_object",
            "magic_hex": "c301",
            "current_fingerprint": avro.FINGERPRINT_HEX,
            "writer_schemas": {
                avro.FINGERPRINT_HEX: {"schema": avro.VALUE_SCHEMA, "fingerprint": f"crc64-avro:{avro.FINGERPRINT_HEX}"}
            },
        }
    }
