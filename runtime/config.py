"""Node configuration: command-line flags first, then ``DW_*`` environment variables."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

from actors.limits import Limits
from persistence.pg_shard_leases import MAX_NODE_ID_LENGTH, node_id_problem
from persistence.sqlite_journal import SYNCHRONOUS_LEVELS


def _env(name: str, default: str | None = None, *aliases: str) -> str | None:
    for key in (name, *aliases):
        value = os.environ.get(key)
        if value not in (None, ""):
            return value
    return default


def _secret(name: str) -> str | None:
    """A credential from ``NAME`` or from the file named by ``NAME_FILE`` (so secrets need not
    sit in the environment listing); one trailing newline of the file is dropped."""
    value = _env(name)
    if value is not None:
        return value
    path = _env(f"{name}_FILE")
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE names {path!r}, which cannot be read: {exc.strerror}") from None
    text = text[:-1] if text.endswith("\n") else text
    return text or None


class ConfigError(ValueError):
    """A configuration value the operator must fix; the message says which and why."""


def _synchronous(value: str) -> str:
    """The SQLite durability level, refused unless SQLite knows it by name: SQLite reads any
    other word (a typo of FULL included) as NORMAL or OFF without complaint."""
    level = value.strip().upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ConfigError(
            f"DW_SQLITE_SYNCHRONOUS is {value!r}; it must be one of {', '.join(SYNCHRONOUS_LEVELS)} (any letter case)"
        )
    return level


def _default_node_id(port: int) -> str:
    """``<host name>:<port>`` (``<host name>-<pid>`` without a port): stable across restarts of
    the same listener, so a restart is not a new member. A host name too long for a node id, or
    not printable ASCII, is cut and given a hash of the whole name, which keeps it stable and
    apart from another host's that starts alike."""
    host = os.uname().nodename
    suffix = f":{port}" if port else f"-{os.getpid()}"
    candidate = host + suffix
    if node_id_problem(candidate) is None:
        return candidate
    tag = "~" + hashlib.sha256(host.encode()).hexdigest()[:8]
    safe = re.sub(r"[^!-~]", "_", host)[: MAX_NODE_ID_LENGTH - len(tag) - len(suffix)]
    return safe + tag + suffix


def _int(name: str, default: int) -> int:
    value = _env(name)
    return int(value) if value is not None else default


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./.dw-data"
    database: str | None = None  # postgresql://… selects the PostgreSQL journal
    insecure: bool = False
    auth_driver: str = "none"
    auth_tokens: dict[str, str] = field(default_factory=dict)
    signature_keys: dict[str, str] = field(default_factory=dict)
    auth_backward_compatible: bool = True
    signature_compat: str | None = None  # "body-only": the reference's replayable scheme
    default_namespace: str = "default"
    server_id: str = "dw-server-1"
    app_version: str = "2.0.0"
    max_payload_bytes: int = 2 * 1024 * 1024
    max_payload_depth: int = 64
    keep_alive_seconds: float = 75.0
    max_memo_bytes: int = 256 * 1024
    poll_timeout: int = 30
    max_poll_timeout: int = 60
    sticky_ttl_seconds: int = 300  # the longest a run's tasks prefer the worker that cached it (spec §12.2)
    idle_seconds: float = 30.0
    workflow_task_lease: float = 60.0
    activity_lease: float = 300.0
    worker_stale_after: float = 60.0  # a worker not heard from for this long is stale, everywhere (routing, views, queries)
    shard_count: int = 64
    node_id: str = ""
    advertise_url: str | None = None
    synchronous: str = "FULL"
    compression: bool = True
    metrics_enabled: bool = True  # Prometheus /metrics and the request counters behind it
    metrics_public: bool = False  # /metrics without credentials (a scraper inside a trusted network)
    history_retention_days: int = 30
    query_timeout: float = 30.0
    retention_interval: float = 3600.0
    max_pending_activities: int = 2000
    max_pending_children: int = 2000
    max_pending_timers: int = 2000
    max_search_attributes: int = 100
    max_search_attribute_key_length: int = 128
    max_search_attribute_value_bytes: int = 2048
    max_operation_name_length: int = 256
    max_history_events: int = 50_000
    max_pending_signals: int = 5000
    max_parked_polls_per_queue: int = 1000
    max_parked_stream_reads: int = 1000  # workflow-stream tails waiting on one node (extended spec §7.2)
    max_stream_items_per_run: int = 10_000
    export_signing_key: str | None = None
    export_signing_key_id: str | None = None
    query_max_pending: int = 1024

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        cfg = cls(
            auth_driver=(_env("DW_AUTH_DRIVER", None, "WORKFLOW_SERVER_AUTH_DRIVER") or "none").lower(),
            database=_env("DW_DATABASE_URL"),
            auth_tokens={
                role: token
                for role, token in (
                    ("legacy", _secret("DW_AUTH_TOKEN")),
                    ("worker", _secret("DW_WORKER_TOKEN")),
                    ("operator", _secret("DW_OPERATOR_TOKEN")),
                    ("admin", _secret("DW_ADMIN_TOKEN")),
                )
                if token
            },
            signature_keys={
                role: key
                for role, key in (
                    ("legacy", _secret("DW_SIGNATURE_KEY")),
                    ("worker", _secret("DW_WORKER_SIGNATURE_KEY")),
                    ("operator", _secret("DW_OPERATOR_SIGNATURE_KEY")),
                    ("admin", _secret("DW_ADMIN_SIGNATURE_KEY")),
                )
                if key
            },
            auth_backward_compatible=(_env("DW_AUTH_BACKWARD_COMPATIBLE", "true") or "true").lower() not in ("0", "false", "no"),
            signature_compat=(_env("DW_SIGNATURE_COMPAT") or "").lower() or None,
            default_namespace=(_env("DW_DEFAULT_NAMESPACE", "default") or "default").lower(),
            server_id=_env("DW_SERVER_ID", os.uname().nodename) or "dw-server-1",
            app_version=_env("APP_VERSION", "2.0.0") or "2.0.0",
            max_payload_bytes=_int("DW_MAX_PAYLOAD_BYTES", 2 * 1024 * 1024),
            max_payload_depth=_int("DW_MAX_PAYLOAD_DEPTH", 64),
            keep_alive_seconds=float(_int("DW_HTTP_KEEP_ALIVE_SECONDS", 75)),
            max_memo_bytes=_int("DW_MAX_MEMO_BYTES", 256 * 1024),
            poll_timeout=_int("DW_WORKER_POLL_TIMEOUT", 30),
            sticky_ttl_seconds=_int("DW_STICKY_TTL_SECONDS", 300),
            synchronous=_synchronous(_env("DW_SQLITE_SYNCHRONOUS", "FULL") or "FULL"),
            compression=(_env("DW_COMPRESSION_ENABLED", "true") or "true").lower() not in ("0", "false", "no"),
            metrics_enabled=(_env("DW_METRICS_ENABLED", "true") or "true").lower() not in ("0", "false", "no"),
            metrics_public=(_env("DW_METRICS_PUBLIC", "false") or "false").lower() in ("1", "true", "yes"),
            history_retention_days=_int("DW_HISTORY_RETENTION_DAYS", 30),
            retention_interval=float(_int("DW_RETENTION_PASS_SECONDS", 3600)),
            max_pending_activities=_int("DW_MAX_PENDING_ACTIVITIES", 2000),
            max_pending_children=_int("DW_MAX_PENDING_CHILDREN", 2000),
            max_pending_timers=_int("DW_MAX_PENDING_TIMERS", 2000),
            max_search_attributes=_int("DW_MAX_SEARCH_ATTRIBUTES", 100),
            max_search_attribute_key_length=_int("DW_MAX_SEARCH_ATTRIBUTE_KEY_LENGTH", 128),
            max_search_attribute_value_bytes=_int("DW_MAX_SEARCH_ATTRIBUTE_VALUE_BYTES", 2048),
            max_operation_name_length=_int("DW_MAX_OPERATION_NAME_LENGTH", 256),
            max_history_events=_int("DW_MAX_HISTORY_EVENTS", 50_000),
            max_pending_signals=_int("DW_MAX_PENDING_SIGNALS", 5000),
            max_parked_polls_per_queue=_int("DW_MAX_PARKED_POLLS_PER_QUEUE", 1000),
            max_parked_stream_reads=_int("DW_MAX_PARKED_STREAM_READS", 1000),
            max_stream_items_per_run=_int("DW_MAX_STREAM_ITEMS_PER_RUN", 10_000),
            query_timeout=float(_int("DW_QUERY_TASK_TIMEOUT", _int("DW_WORKER_POLL_TIMEOUT", 30))),
            export_signing_key=_env("DW_HISTORY_EXPORT_SIGNING_KEY"),
            export_signing_key_id=_env("DW_HISTORY_EXPORT_SIGNING_KEY_ID"),
            query_max_pending=_int("DW_QUERY_TASK_MAX_PENDING_PER_QUEUE", 1024),
            workflow_task_lease=float(_int("DW_WORKFLOW_TASK_LEASE_SECONDS", 60)),
            activity_lease=float(_int("DW_ACTIVITY_LEASE_SECONDS", 300)),
            worker_stale_after=float(_int("DW_WORKER_STALE_AFTER_SECONDS", 60)),
            idle_seconds=float(_int("DW_ACTOR_IDLE_SECONDS", 30)),
            shard_count=_int("DW_SHARD_COUNT", 64),
            node_id=_env("DW_NODE_ID") or "",
            advertise_url=_env("DW_ADVERTISE_URL"),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        cfg.synchronous = _synchronous(cfg.synchronous)  # an override is held to the same words
        if not cfg.advertise_url and cfg.port:
            host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
            cfg.advertise_url = f"http://{host}:{cfg.port}"
        if not cfg.node_id:
            cfg.node_id = _default_node_id(cfg.port)
        problem = node_id_problem(cfg.node_id)
        if problem is not None:  # the cluster could not tell this member from another
            raise ConfigError(f"DW_NODE_ID (--node-id): {problem}")
        return cfg

    @property
    def limits(self) -> Limits:
        return Limits(
            pending_activities=self.max_pending_activities, pending_children=self.max_pending_children,
            pending_timers=self.max_pending_timers, search_attributes=self.max_search_attributes,
            search_attribute_key_length=self.max_search_attribute_key_length,
            search_attribute_value_bytes=self.max_search_attribute_value_bytes,
            operation_name_length=self.max_operation_name_length,
            history_events=self.max_history_events,
            pending_signals=self.max_pending_signals,
            parked_polls_per_queue=self.max_parked_polls_per_queue,
            stream_items=self.max_stream_items_per_run,
        )

    @property
    def sqlite_path(self) -> str:
        return os.path.join(self.data_dir, "journal.sqlite3")
