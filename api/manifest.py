"""The discovery manifest of ``GET /api/cluster/info``.

The official SDK's Worker refuses to start unless the control-plane request contract,
the worker protocol version and the auth-composition contract validate, and the Client
reads the update wait stages and ``query_tasks`` from here. Only what this server
really does is advertised: every capability switches the SDK onto a stricter path.
"""

from __future__ import annotations

from typing import Any

from actors import tracing
from actors.commands import SUPPORTED_COMMANDS
from actors.memo import CAPABILITY as MEMO_CAPABILITY
from runtime.update_validation import SEMANTICS as VALIDATION_SEMANTICS
from runtime.workers import RECEIPT_RETENTION_SECONDS

WORKER_PROTOCOL_VERSION = "1.20"
CONTROL_PLANE_VERSION = "2"
CONTROL_PLANE_HEADER = "X-Durable-Workflow-Control-Plane-Version"
WORKER_PROTOCOL_HEADER = "X-Durable-Workflow-Protocol-Version"
REQUEST_CONTRACT_SCHEMA = "durable-workflow.v2.control-plane-request.contract"

PROJECTED_FIELDS = [
    "run_id", "workflow_type", "namespace", "business_key", "status", "status_bucket", "is_terminal",
    "task_queue", "run_number", "run_count", "workflow_count", "is_current_run", "compatibility",
    "started_at", "closed_at", "last_progress_at", "wait_kind", "wait_reason", "next_page_token",
    "command_id", "command_status", "command_source", "target_scope", "outcome", "reason",
    "rejection_reason", "validation_errors", "result", "result_envelope", "update_id", "update_status",
    "wait_for", "wait_timed_out", "wait_timeout_seconds", "blocked_reason", "message", "diagnostic_status",
]

OPERATIONS: dict[str, dict[str, Any]] = {
    "list": {"operation_name_field": None, "required_fields": [], "success_fields": []},
    "start": {"operation_name_field": None, "required_fields": [], "success_fields": ["workflow_id", "outcome"]},
    "describe": {"operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": []},
    "list_runs": {"operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": []},
    "describe_run": {"operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": ["run_id"]},
    "debug_workflow": {
        "operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": ["run_id", "diagnostic_status"],
    },
    "history": {
        "operation_name_field": None, "required_fields": ["workflow_id", "run_id"], "success_fields": ["next_page_token"],
    },
    "signal": {
        "operation_name_field": "signal_name",
        "required_fields": ["workflow_id", "operation_name", "operation_name_field"],
        "success_fields": ["outcome"],
    },
    "query": {
        "operation_name_field": "query_name",
        "required_fields": ["workflow_id", "operation_name", "operation_name_field"],
        "success_fields": ["result"],
    },
    "update": {
        "operation_name_field": "update_name",
        "required_fields": ["workflow_id", "operation_name", "operation_name_field"],
        "success_fields": ["outcome"],
    },
    "cancel": {"operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": ["outcome"]},
    "request_cancellation": {"operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": ["outcome"]},
    "terminate": {"operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": ["outcome"]},
    "repair": {"operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": ["outcome"]},
    "archive": {"operation_name_field": None, "required_fields": ["workflow_id"], "success_fields": ["outcome"]},
    "redrive": {"operation_name_field": None, "required_fields": ["workflow_id", "run_id"], "success_fields": ["outcome", "run_id"]},
}

RESPONSE_CONTRACT = {
    "schema": "durable-workflow.v2.control-plane-response.contract",
    "version": 1,
    "legacy_field_policy": "reject_non_canonical",
    "legacy_fields": {"query": "query_name", "signal": "signal_name", "update": "update_name", "wait_policy": "wait_for"},
}

REQUEST_CONTRACT = {
    "schema": REQUEST_CONTRACT_SCHEMA,
    "version": 1,
    "operations": {
        "list": {
            "fields": {
                "status": {
                    "canonical_values": ["running", "completed", "failed"],
                    "rejected_aliases": {
                        "cancelled": "failed", "terminated": "failed", "pending": "running", "waiting": "running",
                    },
                }
            }
        },
        "start": {
            "fields": {
                "duplicate_policy": {
                    "canonical_values": ["fail", "use-existing"],
                    "rejected_aliases": {"use_existing": "use-existing"},
                },
                "execution_timeout_seconds": {"type": "integer", "min": 1},
                "run_timeout_seconds": {"type": "integer", "min": 1},
                "payload_codec": {
                    "type": "string",
                    "canonical_values": ["avro"],
                    "description": "Codec used for serializing workflow payloads. Inferred from input envelope when omitted.",
                },
            },
            "unsupported_fields": [
                "workflow_execution_timeout", "workflow_run_timeout", "workflow_task_timeout", "retry_policy",
                "idempotency_key", "request_id",
            ],
        },
        "update": {
            "fields": {"wait_for": {"canonical_values": ["accepted", "completed"]}},
            "removed_fields": {"wait_policy": "Use wait_for."},
        },
    },
}

AUTH_COMPOSITION_CONTRACT = {
    "schema": "durable-workflow.v2.auth-composition.contract",
    "version": 1,
    "scope": "external_execution_carriers",
    "unknown_field_policy": "ignore_additive_reject_unknown_required",
    "precedence": {
        "connection_values": ["flag", "environment", "selected_profile", "default"],
        "profile_selection": ["flag_env", "DW_ENV", "current_profile", "default_profile"],
    },
    "canonical_environment": {
        "server_url": "DURABLE_WORKFLOW_SERVER_URL",
        "namespace": "DURABLE_WORKFLOW_NAMESPACE",
        "auth_token": "DURABLE_WORKFLOW_AUTH_TOKEN",
        "tls_verify": "DURABLE_WORKFLOW_TLS_VERIFY",
        "profile": "DW_ENV",
    },
    "auth_material": {
        "token": {
            "status": "supported",
            "transport": "bearer_authorization_header",
            "persisted_as": "environment_reference",
            "effective_config_value": "redacted",
        },
        "mtls": {"status": "reserved", "persisted_as": "file_reference", "effective_config_value": "references_only"},
        "signed_headers": {"status": "reserved", "persisted_as": "key_reference", "effective_config_value": "references_only"},
        "extensions": {"status": "reserved", "rule": "Unknown auth material kinds are rejected until published here."},
    },
    "effective_config": {
        "required_fields": ["server_url", "namespace", "profile", "auth", "tls", "identity"],
        "source_values": ["flag", "environment", "selected_profile", "default"],
    },
    "redaction": {
        "never_echo": [
            "bearer_tokens", "private_keys", "shared_signature_keys",
            "client_certificate_private_key_material", "raw_authorization_headers",
        ],
        "allowed_diagnostics": ["auth_material_kind", "source", "profile_name"],
    },
    "resolution": {"summary": "Flags override environment, which overrides the selected profile, then defaults."},
}


def server_capabilities(poll_timeout: int, compression: bool, sticky_ttl: int = 300) -> dict[str, Any]:
    return {
        "long_poll_timeout": poll_timeout,
        "supported_workflow_task_commands": SUPPORTED_COMMANDS,
        "workflow_task_poll_request_idempotency": True,
        "history_page_size_default": 500,
        "history_page_size_max": 1000,
        "query_tasks": True,
        "activity_retry_policy": True,
        "activity_timeouts": True,
        "child_workflow_retry_policy": True,
        "child_workflow_timeouts": True,
        "parent_close_policy": True,
        "non_retryable_failures": True,
        "response_compression": ["gzip", "deflate"] if compression else [],
        "history_compression": {"supported_encodings": [], "compression_threshold": 50},
        "workflow_memo_updates": MEMO_CAPABILITY,
        "update_validation_tasks": True,
        "synchronous_update_validation": VALIDATION_SEMANTICS,
        "cooperative_cancellation": True,
        "prepared_local_activities": True,
        "prepared_local_activity_groups": True,
        "prepared_local_activity_cancellation_policies": ["try_cancel", "wait_cancellation_completed"],
        "observability_context": dict(tracing.CAPABILITY),  # carriers kept and handed back on tasks (§15.1)
        "sticky_execution": {
            "supported": True, "routing_identity": "worker_id", "ttl_seconds": sticky_ttl,
            "replay_modes": ["sticky_hit_expected", "cold_replay", "forced_cold_replay"],
        },
        "activity_lease_renewal": True,
        "query_task_authority": True,
        "runtime_external_payload_transport": True,  # a namespace's manifest says whether it can be used (extended §13.4)
        "worker_deregistration_fencing": {
            "supported": True, "schema": "durable-workflow.v2.worker-deregistration.v1",
            "endpoint": "/worker/registrations/{workerId}/deregister", "receipt_retention_seconds": RECEIPT_RETENTION_SECONDS,
        },
    }


def cluster_info(cfg: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    compression = ["gzip", "deflate"] if cfg.compression else []
    return {
        "server_id": cfg.server_id,
        "version": cfg.app_version,
        "default_namespace": cfg.default_namespace,
        "supported_sdk_versions": {"php": ">=1.0", "python": ">=0.2", "cli": ">=0.1"},
        "capabilities": {
            "workflow_tasks": True, "activity_tasks": True, "signals": True, "queries": True, "updates": True,
            "schedules": True, "schedule_jitter": True, "schedule_max_runs": True, "search_attributes": True,
            "history_export": True, "continue_as_new": True, "child_workflows": True, "activity_timeouts": True,
            "activity_retry_policy": True, "child_workflow_retry_policy": True, "child_workflow_timeouts": True,
            "parent_close_policy": True, "non_retryable_failures": True, "history_retention": True,
            "payload_codec_envelope": True, "payload_codec_envelope_responses": True,
            "bridge_adapter_outcome_contract": False, "external_executor_config_contract": False,
            "invocable_carrier_contract": False, "payload_codecs": ["avro"], "response_compression": compression,
        },
        "worker_fleet": fleet,
        "limits": {
            "max_payload_bytes": cfg.max_payload_bytes, "max_payload_depth": cfg.max_payload_depth,
            "max_memo_bytes": cfg.max_memo_bytes,
            "max_search_attributes": cfg.max_search_attributes,
            "max_search_attribute_key_length": cfg.max_search_attribute_key_length,
            "max_search_attribute_value_bytes": cfg.max_search_attribute_value_bytes,
            "max_operation_name_length": cfg.max_operation_name_length,
            "max_pending_activities": cfg.max_pending_activities, "max_pending_children": cfg.max_pending_children,
            "max_pending_timers": cfg.max_pending_timers, "max_history_events": cfg.max_history_events,
            "max_parked_polls_per_queue": cfg.max_parked_polls_per_queue, "max_query_tasks_pending_per_queue": cfg.query_max_pending,
        },
        "structural_limits": {
            "pending_activity_count": cfg.max_pending_activities, "pending_child_count": cfg.max_pending_children,
            "pending_timer_count": cfg.max_pending_timers,
            "pending_signal_count": cfg.max_pending_signals, "pending_update_count": 500, "command_batch_size": 1000,
            "payload_size_bytes": cfg.max_payload_bytes, "memo_size_bytes": cfg.max_memo_bytes,
            "search_attribute_size_bytes": 40960, "history_transaction_size": 5000, "warning_threshold_percent": 80,
        },
        "client_compatibility": {
            "schema": "durable-workflow.v2.client-compatibility",
            "version": 1,
            "authority": "protocol_manifests",
            "top_level_version_role": "informational",
            "fail_closed": True,
            "required_protocols": {
                "auth_composition": {"schema": AUTH_COMPOSITION_CONTRACT["schema"], "version": 1},
                "control_plane": {
                    "version": CONTROL_PLANE_VERSION,
                    "header": CONTROL_PLANE_HEADER,
                    "request_contract": {"schema": REQUEST_CONTRACT_SCHEMA, "version": 1},
                },
                "worker_protocol": {"version": WORKER_PROTOCOL_VERSION, "header": WORKER_PROTOCOL_HEADER},
            },
            "clients": {},
        },
        "auth_composition_contract": AUTH_COMPOSITION_CONTRACT,
        "control_plane": {
            "version": CONTROL_PLANE_VERSION,
            "header": CONTROL_PLANE_HEADER,
            "response_contract": {
                "schema": "durable-workflow.v2.control-plane-response",
                "version": 1,
                "contract": RESPONSE_CONTRACT,
                "projected_fields": PROJECTED_FIELDS,
                "operations": OPERATIONS,
            },
            "request_contract": REQUEST_CONTRACT,
        },
        "worker_protocol": {
            "version": WORKER_PROTOCOL_VERSION,
            "header": WORKER_PROTOCOL_HEADER,
            "server_capabilities": server_capabilities(cfg.poll_timeout, cfg.compression, cfg.sticky_ttl_seconds),
        },
    }
