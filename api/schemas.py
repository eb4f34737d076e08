"""Request schemas (pydantic) and their translation into the protocol's 422 shape.

pydantic validates once at the edge, in strict mode (no "5" for 5), and the same
models can later generate the OpenAPI document. Unknown keys are ignored, as the
protocol requires, except the start keys the spec forbids outright.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from actors import payload_refs, workflow_streams
from actors.commands import MAX_DURATION_SECONDS
from persistence import avro
from runtime.errors import ProtocolError, validation

Str255 = Annotated[str, Field(max_length=255)]
WorkflowId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
PosInt = Annotated[int, Field(ge=1, le=MAX_DURATION_SECONDS)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


def _check_envelope(value: Any, field: str) -> Any:
    """``input`` is a positional list (CLI style) or an avro envelope; nothing else."""
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, dict):
        codec = value.get("codec")
        if not isinstance(codec, str) or not codec:
            raise ValueError("codec must be a non-empty string")
        if codec != "avro":
            raise ValueError(f"Unknown payload codec [{codec}]; only avro is supported")
        if "blob" in value:
            if not isinstance(value["blob"], str):
                raise ValueError("blob must be a string")
            return value
        if "external_storage" in value or "external_payload" in value:
            problem = payload_refs.envelope_problem(value)
            if problem is not None:
                raise ValueError(problem)
            return value
        raise ValueError("an envelope needs a blob string")
    raise ValueError("must be a list of arguments or a payload envelope {codec, blob}")


class StartWorkflow(_Model):
    workflow_id: WorkflowId | None = None
    workflow_type: Annotated[str, Field(min_length=1, max_length=255)]
    task_queue: Str255 | None = None
    input: Any = None
    business_key: Str255 | None = None
    memo: dict[str, Any] | None = None
    search_attributes: dict[str, Any] | None = None
    duplicate_policy: str | None = None
    execution_timeout_seconds: PosInt | None = None
    run_timeout_seconds: PosInt | None = None
    build_id: Str255 | None = None  # pins the run to a worker build (extended §10.1); wins over compatibility
    compatibility: Str255 | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _check_envelope(v, "input")

    @field_validator("duplicate_policy")
    @classmethod
    def _policy(cls, v: str | None) -> str | None:
        if v is not None and v not in ("fail", "use-existing"):
            raise ValueError("The duplicate_policy field only supports fail or use-existing.")
        return v

    @field_validator("search_attributes")
    @classmethod
    def _attrs(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        import re

        for key in v or {}:  # sizes and counts are the configurable limits (actors.limits)
            if not key or not re.match(r"^[a-zA-Z][a-zA-Z0-9_]*$", key):
                raise ValueError(f"search attribute key [{key}] must match ^[a-zA-Z][a-zA-Z0-9_]*$")
        return v


FORBIDDEN_START_KEYS = {
    "workflow_execution_timeout": "The workflow_execution_timeout field is not supported. Use execution_timeout_seconds.",
    "workflow_run_timeout": "The workflow_run_timeout field is not supported. Use run_timeout_seconds.",
    "workflow_task_timeout": "The workflow_task_timeout field is not supported.",
    "retry_policy": "The retry_policy field is not supported on workflow start.",
    "idempotency_key": "The idempotency_key field is not supported.",
    "request_id": "The request_id field is not supported on workflow start.",
}


class StartActivity(_Model):
    """A standalone activity (extended §8.2); the retry policy and the timeouts' order are
    checked as a ``schedule_activity`` command's (``actors.commands``)."""

    activity_type: Annotated[str, Field(min_length=1, max_length=255)]
    task_queue: Annotated[str, Field(min_length=1, max_length=255)]
    activity_id: WorkflowId | None = None
    activity_class: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    business_key: Str255 | None = None
    input: Any = None
    retry_policy: dict[str, Any] | None = None
    start_to_close_timeout_seconds: PosInt | None = None
    schedule_to_start_timeout_seconds: PosInt | None = None
    schedule_to_close_timeout_seconds: PosInt | None = None
    heartbeat_timeout_seconds: PosInt | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _check_envelope(v, "input")


class Signal(_Model):
    input: Any = None
    request_id: Str255 | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _check_envelope(v, "input")


class AppendMessage(_Model):
    message_id: Annotated[str, Field(min_length=1, max_length=255)]
    input: Any = None

    @field_validator("message_id")
    @classmethod
    def _id_bytes(cls, v: str) -> str:
        if len(v.encode()) > 255:
            raise ValueError("message_id is at most 255 bytes")
        return v

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _check_envelope(v, "input")


class Update(_Model):
    input: Any = None
    request_id: Str255 | None = None
    wait_for: Literal["accepted", "completed"] | None = None
    wait_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _check_envelope(v, "input")


class RetentionPass(_Model):
    run_ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], Field(max_length=100)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] | None = None


class RepairPass(_Model):
    run_ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], Field(max_length=100)] | None = None
    instance_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class ActivityTimeoutPass(_Model):
    execution_ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=255)]], Field(max_length=100)] | None = None
    limit: Annotated[int, Field(ge=1)] | None = None


class Query(_Model):
    input: Any = None

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _check_envelope(v, "input")


class CloseRun(_Model):
    reason: Annotated[str, Field(max_length=1000)] | None = None
    request_id: Str255 | None = None


class Repair(_Model):
    request_id: Str255 | None = None


class Redrive(_Model):
    request_id: Str255 | None = None


class Archive(_Model):
    reason: Annotated[str, Field(max_length=1000)] | None = None


class RequestCancellation(_Model):
    reason: Annotated[str, Field(max_length=1000)] | None = None
    cleanup_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] | None = None
    request_id: Str255 | None = None


class StreamItem(_Model):
    """One item for a workflow stream: a payload envelope or a payload reference (extended §7.2)."""

    payload: dict[str, Any] | None = None
    payload_reference: str | None = None
    payload_codec: str | None = None
    idempotency_key: str | None = None
    item_type: str | None = None
    content_type: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> StreamItem:
        problem = workflow_streams.item_problem(self.model_dump(exclude_none=True))
        if problem is not None:
            raise ValueError(problem[1])
        return self


class AppendStreamItems(_Model):
    items: Annotated[list[StreamItem], Field(min_length=1, max_length=workflow_streams.MAX_ITEMS_PER_APPEND)]
    max_pending_items: Annotated[int, Field(ge=1)] | None = None


class CloseStream(_Model):
    error_reason: Annotated[str, Field(min_length=1, max_length=workflow_streams.MAX_REASON_CHARS)] | None = None
    retention_seconds: Annotated[int, Field(ge=1, le=workflow_streams.MAX_RETENTION_SECONDS)] | None = None


class CreateNamespace(_Model):
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9._-]+$")]
    description: Annotated[str, Field(max_length=1000)] | None = None
    retention_days: Annotated[int, Field(ge=1, le=365)] | None = None


class UpdateNamespace(_Model):
    description: Annotated[str, Field(max_length=1000)] | None = None
    retention_days: Annotated[int, Field(ge=1, le=365)] | None = None


class RegisterWorker(_Model):
    worker_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    task_queue: Annotated[str, Field(min_length=1, max_length=255)]
    runtime: Annotated[str, Field(min_length=1, max_length=64)]
    sdk_version: Str255 | None = None
    supported_workflow_types: list[str] | None = None
    supported_activity_types: list[str] | None = None
    workflow_command_contracts: dict[str, Any] | None = None
    workflow_definition_fingerprints: dict[str, Any] | None = None
    capabilities: list[Any] | None = None
    max_concurrent_workflow_tasks: int | None = None
    max_concurrent_activity_tasks: int | None = None
    max_concurrent_worker_sessions: Annotated[int, Field(ge=1, le=10_000)] | None = None
    task_slots: dict[str, Any] | None = None
    process_metrics: dict[str, Any] | None = None
    build_id: Str255 | None = None


class StorageConfig(_Model):
    uri: Annotated[str, Field(max_length=2048)] | None = None
    bucket: Str255 | None = None
    disk: Str255 | None = None
    auth_profile: Str255 | None = None
    prefix: Annotated[str, Field(max_length=1024)] | None = None
    region: Annotated[str, Field(max_length=128)] | None = None
    endpoint: Annotated[str, Field(max_length=2048)] | None = None
    container: Str255 | None = None


class ExternalStoragePolicy(_Model):
    """A namespace's external payload storage (extended §13.1)."""

    driver: Literal["local", "s3", "gcs", "azure"]
    enabled: bool = True
    threshold_bytes: Annotated[int, Field(ge=1, le=2**40)] | None = None
    config: StorageConfig | None = None


class StorageTest(_Model):
    driver: Literal["local", "s3", "gcs", "azure"] | None = None
    small_payload_bytes: Annotated[int, Field(ge=1, le=1_048_576)] = 1024
    large_payload_bytes: Annotated[int, Field(ge=1, le=16_777_216)] = 1_048_576


class BuildIdAction(_Model):
    """``build_id`` is required; null names the unversioned cohort (extended §10.3)."""

    build_id: Str255 | None

    @field_validator("build_id")
    @classmethod
    def _trimmed(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None


class WorkerSessionRequest(_Model):
    """``WorkerSessionOptions.to_wire`` with the worker (extended §11.1)."""

    worker_id: Annotated[str, Field(min_length=1, max_length=255)]
    session_id: Annotated[str, Field(min_length=1, max_length=255)]
    queue: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    requirements: Annotated[list[Annotated[str, Field(min_length=1, max_length=255)]], Field(max_length=64)] = []
    lease_seconds: PosInt = 120
    ttl_seconds: PosInt = 1800
    max_concurrent_activities: Annotated[int, Field(ge=1, le=10_000)] = 1
    create_if_missing: bool = True
    allow_reacquire_after_failure: bool = True

    @field_validator("requirements")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("The requirements must be distinct.")
        return v


class WorkerSessionHeartbeat(_Model):
    worker_id: Annotated[str, Field(min_length=1, max_length=255)]
    lease_seconds: PosInt = 120


class WorkerSessionClose(_Model):
    worker_id: Annotated[str, Field(min_length=1, max_length=255)]
    reason: Str255 | None = None


class FencedDeregistration(_Model):
    registration_token: Annotated[str, Field(pattern=r"^[a-f0-9]{32}$")]


class WorkerHeartbeat(_Model):
    worker_id: Annotated[str, Field(min_length=1, max_length=255)]
    task_slots: dict[str, Any] | None = None
    process_metrics: dict[str, Any] | None = None


class Poll(_Model):
    worker_id: Annotated[str, Field(min_length=1, max_length=255)]
    task_queue: Annotated[str, Field(min_length=1, max_length=255)]
    poll_request_id: Str255 | None = None
    timeout_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    history_page_size: Annotated[int, Field(ge=1, le=1000)] | None = None
    task_kinds: Annotated[list[str], Field(min_length=1, max_length=2)] | None = None  # multiplexed poll (extended §4.1)
    build_id: Str255 | None = None

    @field_validator("task_kinds")
    @classmethod
    def _kinds(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(set(value)) != len(value) or not set(value) <= {"workflow", "update_validation"}):
            raise ValueError("task_kinds is a list of distinct kinds out of workflow, update_validation")
        return value


class ValidationVerdict(_Model):
    lease_owner: Annotated[str, Field(min_length=1, max_length=255)]
    update_validation_attempt: Annotated[int, Field(ge=1)]


class ValidationFailure(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    message: Annotated[str, Field(min_length=1, max_length=10_000)]
    reason: Literal["update_validator_rejected", "update_validation_worker_failed"]
    type: str | None = None
    validation_errors: dict[str, Any] | None = None


class RejectValidation(ValidationVerdict):
    failure: ValidationFailure


class TaskLease(_Model):
    lease_owner: Annotated[str, Field(min_length=1, max_length=255)]
    workflow_task_attempt: Annotated[int, Field(ge=1)]


class DeliverCancellation(TaskLease):
    request_id: Annotated[str, Field(min_length=1, max_length=255)]
    sequence: Annotated[int, Field(ge=1)]
    call_kind: Annotated[str, Field(min_length=1, max_length=64)]
    sequence_span: Annotated[int, Field(ge=1, le=1000)] | None = None
    operation_sequence: Annotated[int, Field(ge=1)] | None = None
    operation_sequence_span: Annotated[int, Field(ge=1)] | None = None


class PrepareLocalActivity(TaskLease):
    sequence: Annotated[int, Field(ge=1)]
    worker_attempt_id: Annotated[str, Field(min_length=1, max_length=255)]
    descriptor: dict[str, Any]


class RecoverLocalActivity(TaskLease):
    sequence: Annotated[int, Field(ge=1)]
    descriptor: dict[str, Any]


class CheckpointLocalActivities(TaskLease):
    checkpoint_id: Annotated[str, Field(min_length=1, max_length=255)]
    start_sequence: Annotated[int, Field(ge=1)]
    commands: Annotated[list[Any], Field(min_length=1, max_length=1000)]


class LocalActivityControl(TaskLease):
    renew_lease: bool | None = None


class LocalActivityHeartbeat(TaskLease):
    progress: dict[str, Any] | None = None


class LocalActivityOutcome(TaskLease):
    report: dict[str, Any]


class LocalActivityAcknowledge(TaskLease):
    request_id: Annotated[str, Field(min_length=1, max_length=255)]


class StickyCache(_Model):
    """What a sticky worker says it cached (extended spec §12.1)."""

    worker_id: Annotated[str, Field(min_length=1, max_length=255)]
    workflow_id: Annotated[str, Field(min_length=1, max_length=255)]
    run_id: Annotated[str, Field(min_length=1, max_length=255)]
    build_id: Str255 | None = None
    ttl_seconds: Annotated[int, Field(ge=1, le=3600)]
    metrics: dict[str, int] | None = None


class CompleteWorkflowTask(TaskLease):
    commands: list[Any]
    sticky_cache: StickyCache | None = None
    message_stream_cursors: list[Any] | None = None  # checked by the run (actors.message_streams)
    message_stream_waits: list[Any] | None = None  # advisory: the run's condition wait governs wake-ups


class Failure(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    message: Annotated[str, Field(min_length=1)]
    type: str | None = None
    reason: str | None = None
    stack_trace: str | None = None


class FailWorkflowTask(TaskLease):
    failure: Failure


class QueryTaskLease(_Model):
    lease_owner: Annotated[str, Field(min_length=1, max_length=255)]
    query_task_attempt: Annotated[int, Field(ge=1)]


class CompleteQueryTask(QueryTaskLease):
    result: Any = None
    result_envelope: Any = None


class FailQueryTask(QueryTaskLease):
    failure: Failure


class WorkflowTaskHistory(TaskLease):
    next_history_page_token: Annotated[str, Field(min_length=1)]
    history_page_size: Annotated[int, Field(ge=1, le=1000)] | None = None


class AttemptLease(_Model):
    activity_attempt_id: Annotated[str, Field(min_length=1, max_length=255)]
    lease_owner: Annotated[str, Field(min_length=1, max_length=255)]


class AcknowledgeCancellation(AttemptLease):
    request_id: Annotated[str, Field(min_length=1, max_length=255)]


class CompleteActivity(AttemptLease):
    result: Any = None


class ActivityFailure(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    message: Annotated[str, Field(min_length=1)]
    type: str | None = None
    code: int | None = None
    non_retryable: bool | None = None
    details: Any = None


class FailActivity(AttemptLease):
    failure: ActivityFailure


class ActivityHeartbeat(AttemptLease):
    message: str | None = None
    current: int | float | None = None
    total: int | float | None = None
    unit: str | None = None
    details: dict[str, Any] | None = None


Status = Literal["running", "completed", "failed"]


def parse(model: type[_Model], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ProtocolError(
            422,
            "validation_failed",
            "The request body must be a JSON object.",
            errors={"body": ["The request body must be a JSON object."]},
            validation_errors={"body": ["The request body must be a JSON object."]},
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> ProtocolError:
    errors: dict[str, list[str]] = {}
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "body"
        label = field.replace("_", " ")
        if err["type"] == "missing":
            msg = f"The {label} field is required."
        elif err["type"] == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
            if not msg.startswith("The "):
                msg = f"The {field} field is invalid: {msg}."
        else:
            msg = f"The {field} field is invalid: {err['msg']}."
        errors.setdefault(field, []).append(msg)
    return invalid(errors)


def invalid(errors: dict[str, list[str]]) -> ProtocolError:
    messages = [m for ms in errors.values() for m in ms]
    message = messages[0]
    if len(messages) > 1:
        message += f" (and {len(messages) - 1} more error{'s' if len(messages) > 2 else ''})"
    return ProtocolError(422, "validation_failed", message, errors=errors, validation_errors=errors)


def int_arg(query: dict[str, str], key: str, default: int, low: int, high: int, errors: dict[str, list[str]]) -> int:
    """An integer query parameter within [low, high]; a bad value is added to ``errors``."""
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        errors[key] = [f"The {key} field must be an integer from {low} to {high}."]
        return default
    return int(raw)


def encode_input(value: Any) -> Any:
    """CLI-style argument lists are encoded here; envelopes are kept byte for byte."""
    if isinstance(value, list):
        try:
            return avro.envelope(value)
        except avro.PayloadError as exc:
            raise validation("input", f"The input field cannot be encoded: {exc}.") from None
    return value


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())
