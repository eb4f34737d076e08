"""Versioned schema migrations, applied in order by ``bootstrap`` (and on first start)."""

from __future__ import annotations

SQLITE_MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE records (
                run_id TEXT NOT NULL,
                jseq INTEGER NOT NULL,
                body BLOB NOT NULL,
                PRIMARY KEY (run_id, jseq)
            ) WITHOUT ROWID""",
            """CREATE TABLE runs (
                run_id TEXT PRIMARY KEY,
                namespace TEXT NOT NULL,
                workflow_id TEXT NOT NULL,
                run_number INTEGER NOT NULL,
                workflow_type TEXT NOT NULL,
                task_queue TEXT,
                status TEXT NOT NULL,
                closed_reason TEXT,
                business_key TEXT,
                started_at REAL NOT NULL,
                closed_at REAL,
                wake_at REAL,
                attention INTEGER NOT NULL DEFAULT 0,
                last_seq INTEGER NOT NULL DEFAULT 0,
                search_attributes TEXT NOT NULL DEFAULT '{}',
                memo TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX runs_list ON runs(namespace, started_at DESC, run_id DESC)",
            "CREATE INDEX runs_instance ON runs(namespace, workflow_id, run_number)",
            "CREATE INDEX runs_open ON runs(status, attention, wake_at)",
            """CREATE TABLE instances (
                namespace TEXT NOT NULL,
                workflow_id TEXT NOT NULL,
                workflow_type TEXT NOT NULL,
                current_run_id TEXT NOT NULL,
                run_count INTEGER NOT NULL,
                created_at REAL NOT NULL,
                PRIMARY KEY (namespace, workflow_id)
            )""",
            "CREATE INDEX instances_id ON instances(workflow_id)",
            """CREATE TABLE namespaces (
                name TEXT PRIMARY KEY,
                description TEXT,
                retention_days INTEGER NOT NULL,
                status TEXT NOT NULL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            """CREATE TABLE workers (
                namespace TEXT NOT NULL,
                worker_id TEXT NOT NULL,
                task_queue TEXT NOT NULL,
                runtime TEXT NOT NULL,
                registered_at REAL NOT NULL,
                last_seen REAL NOT NULL,
                info TEXT NOT NULL DEFAULT '{}',
                PRIMARY KEY (namespace, worker_id)
            )""",
        ],
    ),
    (
        2,
        [
            """CREATE TABLE cluster_settings (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )""",
            """CREATE TABLE shards (
                shard_id INTEGER PRIMARY KEY,
                owner_node TEXT,
                epoch INTEGER NOT NULL DEFAULT 0,
                updated_at REAL
            )""",
            """CREATE TABLE nodes (
                node_id TEXT PRIMARY KEY,
                advertise_url TEXT,
                started_at REAL,
                heartbeat_at REAL,
                status TEXT NOT NULL
            )""",
        ],
    ),
    (
        3,
        [
            """CREATE TABLE objects (
                namespace TEXT NOT NULL,
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                body TEXT NOT NULL,
                updated_at REAL NOT NULL,
                PRIMARY KEY (namespace, kind, name)
            ) WITHOUT ROWID""",
        ],
    ),
    (
        4,
        [
            # Signatures of accepted signed requests, until their window closes (runtime.replay_guard).
            "CREATE TABLE seen_signatures (key BLOB PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID",
            "CREATE INDEX seen_signatures_expiry ON seen_signatures(expires_at)",
        ],
    ),
    (
        5,
        [
            # Workflow ids are unique across namespaces (control plane 4.1): the store enforces
            # it, so concurrent starts in two namespaces (on two nodes) cannot both reserve one.
            "DROP INDEX instances_id",
            "CREATE UNIQUE INDEX instances_workflow_id ON instances(workflow_id)",
        ],
    ),
    (
        6,
        [
            # What a listing shows of a run beyond the common columns, kept current by every
            # commit (a standalone activity's type, status and attempts: actors.standalone).
            "ALTER TABLE runs ADD COLUMN detail TEXT NOT NULL DEFAULT '{}'",
        ],
    ),
]


# The same schema in PostgreSQL's dialect, applied by ``PostgresJournal.open`` under a
# transaction-level advisory lock. Every text column uses the "C" collation, like SQLite's
# BINARY: byte-order sorting (``ORDER BY run_id``, ``ORDER BY name``) and ASCII-only case
# folding in ILIKE, whatever the database's default locale. Integers are BIGINT (SQLite's
# INTEGER is 64-bit), timestamps DOUBLE PRECISION (exact for Python floats), bodies BYTEA.
# Version 2 (both backends) adds clustering: ``cluster_settings`` (the shard count, fixed at
# cluster creation), ``shards`` (owner node and fencing epoch per shard) and ``nodes``
# (membership heartbeats).
# search_attributes/memo/info are JSON *text*, not jsonb: jsonb rewrites numbers (1e300 comes
# back as an int) and rejects "\u0000", so it would not round-trip every dict SQLite does.
POSTGRES_MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE records (
                run_id TEXT COLLATE "C" NOT NULL,
                jseq BIGINT NOT NULL,
                body BYTEA NOT NULL,
                PRIMARY KEY (run_id, jseq)
            )""",
            """CREATE TABLE runs (
                run_id TEXT COLLATE "C" PRIMARY KEY,
                namespace TEXT COLLATE "C" NOT NULL,
                workflow_id TEXT COLLATE "C" NOT NULL,
                run_number BIGINT NOT NULL,
                workflow_type TEXT COLLATE "C" NOT NULL,
                task_queue TEXT COLLATE "C",
                status TEXT COLLATE "C" NOT NULL,
                closed_reason TEXT COLLATE "C",
                business_key TEXT COLLATE "C",
                started_at DOUBLE PRECISION NOT NULL,
                closed_at DOUBLE PRECISION,
                wake_at DOUBLE PRECISION,
                attention BOOLEAN NOT NULL DEFAULT FALSE,
                last_seq BIGINT NOT NULL DEFAULT 0,
                search_attributes TEXT NOT NULL DEFAULT '{}',
                memo TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX runs_list ON runs(namespace, started_at DESC, run_id DESC)",
            "CREATE INDEX runs_instance ON runs(namespace, workflow_id, run_number)",
            "CREATE INDEX runs_open ON runs(status, attention, wake_at)",
            """CREATE TABLE instances (
                namespace TEXT COLLATE "C" NOT NULL,
                workflow_id TEXT COLLATE "C" NOT NULL,
                workflow_type TEXT COLLATE "C" NOT NULL,
                current_run_id TEXT COLLATE "C" NOT NULL,
                run_count BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (namespace, workflow_id)
            )""",
            "CREATE INDEX instances_id ON instances(workflow_id)",
            """CREATE TABLE namespaces (
                name TEXT COLLATE "C" PRIMARY KEY,
                description TEXT COLLATE "C",
                retention_days BIGINT NOT NULL,
                status TEXT COLLATE "C" NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE workers (
                namespace TEXT COLLATE "C" NOT NULL,
                worker_id TEXT COLLATE "C" NOT NULL,
                task_queue TEXT COLLATE "C" NOT NULL,
                runtime TEXT COLLATE "C" NOT NULL,
                registered_at DOUBLE PRECISION NOT NULL,
                last_seen DOUBLE PRECISION NOT NULL,
                info TEXT NOT NULL DEFAULT '{}',
                PRIMARY KEY (namespace, worker_id)
            )""",
        ],
    ),
    (
        2,
        [
            """CREATE TABLE cluster_settings (
                key TEXT COLLATE "C" PRIMARY KEY,
                value TEXT COLLATE "C" NOT NULL
            )""",
            """CREATE TABLE shards (
                shard_id INTEGER PRIMARY KEY,
                owner_node TEXT COLLATE "C",
                epoch BIGINT NOT NULL DEFAULT 0,
                updated_at DOUBLE PRECISION
            )""",
            """CREATE TABLE nodes (
                node_id TEXT COLLATE "C" PRIMARY KEY,
                advertise_url TEXT COLLATE "C",
                started_at DOUBLE PRECISION,
                heartbeat_at DOUBLE PRECISION,
                status TEXT COLLATE "C" NOT NULL
            )""",
        ],
    ),
    (
        3,
        [
            """CREATE TABLE objects (
                namespace TEXT COLLATE "C" NOT NULL,
                kind TEXT COLLATE "C" NOT NULL,
                name TEXT COLLATE "C" NOT NULL,
                body TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (namespace, kind, name)
            )""",
            # Search-attribute filters use jsonb containment on an expression index. The column
            # stays text (see above); a value jsonb cannot hold is simply not indexed (NULL).
            """CREATE FUNCTION dw_sa_jsonb(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN
                RETURN t::jsonb;
            EXCEPTION WHEN others THEN
                RETURN NULL;
            END $$""",
            "CREATE INDEX runs_search ON runs USING gin (dw_sa_jsonb(search_attributes) jsonb_path_ops)",
            "CREATE INDEX runs_type_list ON runs(namespace, workflow_type, started_at DESC, run_id DESC)",
        ],
    ),
    (
        4,
        [
            "CREATE TABLE seen_signatures (key BYTEA PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX seen_signatures_expiry ON seen_signatures(expires_at)",
        ],
    ),
    (
        5,
        [
            "DROP INDEX instances_id",  # workflow ids are unique across namespaces (see SQLite's version 5)
            "CREATE UNIQUE INDEX instances_workflow_id ON instances(workflow_id)",
        ],
    ),
    (
        6,
        ["""ALTER TABLE runs ADD COLUMN detail TEXT COLLATE "C" NOT NULL DEFAULT '{}'"""],  # see SQLite's version 6
    ),
]
