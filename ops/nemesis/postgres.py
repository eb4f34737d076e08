"""The PostgreSQL the cluster runs on: one-off statements, readiness, and restarting the local
cluster (a fault, and the guarantee that a run never leaves the database stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit


def dsn_host_port(dsn: str) -> tuple[str, int]:
    """Where the database listens (the fault and the teardown act on that server)."""
    parts = urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def schema_of(dsn: str) -> str | None:
    """The schema a URL names with ``?search_path=``, if any."""
    values = parse_qs(urlsplit(dsn).query).get("search_path")
    return values[0] if values else None


async def pg_execute(dsn: str, sql: str, *args: Any) -> list[Any]:
    """One statement on its own short-lived connection, bounded so a dead server cannot hang the run."""
    import asyncpg

    conn = await asyncio.wait_for(asyncpg.connect(dsn), 10)
    try:
        return await asyncio.wait_for(conn.fetch(sql, *args), 20)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 5)


def pg_isready(host: str, port: int) -> bool:
    try:
        return subprocess.run(["pg_isready", "-q", "-h", host, "-p", str(port)], timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _pg_version() -> str:
    versions = os.listdir("/etc/postgresql")
    if not versions:
        raise RuntimeError("/etc/postgresql holds no cluster")
    return sorted(versions, key=lambda v: [int(p) if p.isdigit() else 0 for p in v.split(".")])[-1]


def pg_ctl(action: str) -> str:
    """``pg_ctlcluster <version> main <action>`` for the local cluster (blocking)."""
    done = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", action],
        capture_output=True, text=True, timeout=90,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster {action} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def wait_pg_ready(host: str, port: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg_isready(host, port):
            return True
        time.sleep(0.5)
    return False


def ensure_postgres_running(host: str, port: int) -> str | None:
    """Whatever happened during the run, leave PostgreSQL accepting connections; the next
    test (or run) must not inherit a stopped database. Returns an error text if it cannot."""
    if pg_isready(host, port):
        return None
    if host not in ("127.0.0.1", "localhost", "::1"):
        return f"PostgreSQL at {host}:{port} is not answering at the end of the run (not local: not restarted)"
    try:
        pg_ctl("start")
    except Exception as exc:  # noqa: BLE001 - reported, the caller decides
        return f"PostgreSQL was down at the end of the run and could not be started: {exc}"
    return None if wait_pg_ready(host, port) else "PostgreSQL was down at the end of the run and did not come back"

