"""Seeded fault injection ("nemesis") against a dw-server cluster on PostgreSQL.

The cluster tests each prove one failure at a time with a handful of workflows. Production
sees them mixed, under steady load, and the bugs live in the interleavings: a shard that moves
while a signal is in flight, a node that wakes from a freeze into a cluster that went on
without it, a journal pool that lost every connection at once. This harness reproduces such
interleavings from a seed, so a failing run can be replayed and a passing one means something:

1. It starts N ``dw-server`` processes on one PostgreSQL schema (fixed ports, short leases).
2. It runs load through the official SDK: one ``Worker`` per node and a starter that starts
   ``rate`` workflows per second round-robin over the nodes. Each workflow runs an activity, a
   1 s durable timer, waits for a signal, runs a second activity and returns a result derived
   from its input, so a wrong answer is detectable. Every start and signal the SDK
   acknowledged is recorded; failed client calls are retried (idempotently) through the next
   node and counted.
3. It injects faults every 10-25 s, each against one node drawn from ``random.Random(seed)``:
   SIGKILL + restart, SIGSTOP for ~15 s, termination of the node's PostgreSQL backends, and
   exactly one PostgreSQL restart per run.
4. After a quiet phase it reads every acknowledged workflow back (describe + full history)
   and counts what a durable system must never do: lose an acknowledged start or signal,
   duplicate an event, leave a gap in a history, return a wrong result, leave a workflow
   unfinished 60 s after the last fault, or let a node process die on its own.

``python -m ops.nemesis --duration 600 --seed 7`` runs it from the command line (exit status 1
on any violation); ``run(NemesisConfig(...))`` returns a ``NemesisResult`` for tests. This module
is self-contained (it must not import the test suite): it only needs the SDK and asyncpg.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from durable_workflow import (
    ActivityRetryPolicy,
    Client,
    TransportRetryPolicy,
    Worker,
    WorkflowNotFound,
    activity,
    serializer,
    workflow,
)

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/dw_test"
FAULT_KINDS = ("kill", "stop", "pg_terminate")  # drawn per fault; "pg_restart" happens exactly once
ALL_FAULT_KINDS = (*FAULT_KINDS, "pg_restart")
COUNT_LABELS = (
    ("lost_starts", "lost starts"), ("lost_signals", "lost signals"), ("duplicate_signals", "duplicate signals"),
    ("duplicate_events", "duplicate events"), ("gaps", "gaps"), ("wrong_results", "wrong results"),
    ("stuck", "stuck"), ("late", "late"), ("run_replaced", "run replaced"), ("unreadable", "unreadable"),
)

# --- the workflow under test -----------------------------------------------------------------

WORKFLOW_TYPE = "nemesis_order"
SIGNAL_NAME = "proceed"

# Activities never fail on their own; the policy only matters if the server times an attempt
# out. Retrying generously keeps "the server lost an attempt" from turning into a failed run
# that would be reported as a wrong result instead of a delay.
_ACTIVITY_RETRY = ActivityRetryPolicy(
    max_attempts=100, initial_interval_seconds=0.5, backoff_coefficient=1.5, maximum_interval_seconds=2
)


@activity.defn(name="nemesis_reserve")
def reserve(n: int) -> int:
    """First step: a value derived from the input, so a result from another run is detectable."""
    return n * 3 + 1


@activity.defn(name="nemesis_confirm")
def confirm(reserved: int, token: str) -> str:
    """Second step: combines the first step's result with the signal's payload."""
    return f"{reserved}:{token}"


@workflow.defn(name=WORKFLOW_TYPE)
class NemesisOrder:
    """Activity, 1 s durable timer, a signal awaited with ``wait_condition``, a second activity."""

    def __init__(self) -> None:
        self.token: str | None = None

    @workflow.signal(SIGNAL_NAME)
    def proceed(self, token: str) -> None:
        self.token = token

    def run(self, ctx: Any, n: int) -> Generator[Any, Any, dict[str, Any]]:
        reserved = yield ctx.schedule_activity("nemesis_reserve", [n], retry_policy=_ACTIVITY_RETRY)
        yield ctx.sleep(1)
        yield ctx.wait_condition(lambda: self.token is not None, key="proceed")
        confirmed = yield ctx.schedule_activity("nemesis_confirm", [reserved, self.token], retry_policy=_ACTIVITY_RETRY)
        return {"n": n, "reserved": reserved, "confirmed": confirmed}


def expected_result(n: int, token: str) -> dict[str, Any]:
    """What ``NemesisOrder`` must return for input ``n`` and signal payload ``token``."""
    return {"n": n, "reserved": n * 3 + 1, "confirmed": f"{n * 3 + 1}:{token}"}


# --- configuration and results ---------------------------------------------------------------


@dataclass
class NemesisConfig:
    """One run. ``duration`` is the load (and fault) phase in seconds; ``quiet_seconds`` bounds
    the fault-free phase after it, which ends early once every workflow has completed."""

    duration: float = 600.0
    seed: int = 0
    nodes: int = 3
    rate: float = 10.0
    database: str | None = None
    quiet_seconds: float = 120.0
    faults: bool = True
    shard_count: int = 16
    completion_deadline: float = 60.0  # every workflow completes this long after the last fault
    fault_interval: tuple[float, float] = (10.0, 25.0)
    stop_seconds: float = 15.0
    log_dir: str | None = None
    workflow_task_lease_seconds: int = 5
    activity_lease_seconds: int = 5
    actor_idle_seconds: int = 5
    attempt_timeout: float = 12.0  # one client call; the server may hold a request 8 s for an owner
    check_seconds: float = 180.0  # the whole read-back; what is not read by then is "unreadable"
    operation_deadline: float = 120.0  # one logical operation (all its retries)
    restart_dead_nodes: bool = True  # a node that died on its own is recorded, then restarted
    echo: bool = True  # print the narrative to stdout (always written to harness.log)


@dataclass
class PlannedFault:
    gap: float  # seconds after the previous fault ended (or the load began)
    kind: str
    node: int
    downtime: float  # for "kill": seconds between the kill and the restart
    scope: str = "process"  # for "stop": freeze the node's main process, or its whole process tree


@dataclass
class FaultRecord:
    kind: str
    node: str | None
    started: float  # seconds since the run began
    ended: float
    detail: str
    injected: bool


@dataclass
class NodeReport:
    node_id: str
    url: str
    generations: int  # processes started for this node
    nemesis_kills: int
    unexpected_exits: list[str]  # "t=..s pid .. exit code ..: last log lines"
    restart_failures: int
    tracebacks: int
    log_path: str
    orphans: list[str] = field(default_factory=list)
    lease_losses: int = 0  # informational: how often the node logged losing its lease session
    start_failures: list[str] = field(default_factory=list)

    @property
    def stayed_up(self) -> bool:
        return not self.unexpected_exits and not self.restart_failures and not self.start_failures


@dataclass
class NemesisResult:
    """Everything a caller asserts on; ``violations`` is empty exactly when the run passed."""

    seed: int
    faults_enabled: bool
    log_dir: str
    faults: list[FaultRecord] = field(default_factory=list)
    faults_by_kind: dict[str, int] = field(default_factory=dict)
    last_fault_end: float | None = None
    workflows_submitted: int = 0
    starts_acknowledged: int = 0
    starts_unacknowledged: int = 0
    signals_acknowledged: int = 0
    signals_unacknowledged: int = 0
    completed: int = 0
    completed_on_time: int = 0
    latency: dict[str, float] = field(default_factory=dict)  # start acknowledged -> seen completed: p50, p99, max
    counts: dict[str, int] = field(default_factory=dict)  # lost_starts, duplicate_events, ...
    examples: dict[str, list[str]] = field(default_factory=dict)
    client_errors: int = 0
    client_errors_by_op: dict[str, int] = field(default_factory=dict)
    client_error_types: dict[str, int] = field(default_factory=dict)
    failovers: int = 0
    slowest_failover: float = 0.0
    slowest_failover_op: str = ""
    worker_restarts: int = 0
    nodes: list[NodeReport] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and not self.harness_errors

    def summary(self) -> str:
        """The figures a reader needs to judge the run, one item per line."""
        kinds = ", ".join(f"{k} {self.faults_by_kind.get(k, 0)}" for k in ALL_FAULT_KINDS)
        c = self.counts
        lines = [
            f"nemesis seed {self.seed} ({'faults' if self.faults_enabled else 'NO faults'}), "
            f"{self.elapsed:.0f} s, logs in {self.log_dir}",
            f"faults injected: {sum(self.faults_by_kind.values())} ({kinds})"
            + (f"; last fault ended at t={self.last_fault_end:.1f}s" if self.last_fault_end is not None else ""),
            f"workflows: submitted {self.workflows_submitted}, starts acknowledged {self.starts_acknowledged} "
            f"(gave up {self.starts_unacknowledged}), signals acknowledged {self.signals_acknowledged} "
            f"(gave up {self.signals_unacknowledged}), completed {self.completed} "
            f"(on time {self.completed_on_time}); start-to-completion as observed: "
            + (", ".join(f"{k} {v:.1f} s" for k, v in self.latency.items()) or "-"),
            ", ".join(f"{label} {c.get(key, 0)}" for key, label in COUNT_LABELS),
            f"client errors: {self.client_errors} {dict(self.client_errors_by_op)}; "
            f"failovers {self.failovers}, slowest {self.slowest_failover:.1f} s ({self.slowest_failover_op or '-'})",
            f"client error types: {dict(self.client_error_types)}",
            f"SDK worker restarts: {self.worker_restarts}",
        ]
        for n in self.nodes:
            state = "stayed up" if n.stayed_up else (
                f"DIED ON ITS OWN x{len(n.unexpected_exits)}, failed starts x{len(n.start_failures)}")
            lines.append(
                f"node {n.node_id} ({n.url}): {state}; processes {n.generations}, killed by nemesis "
                f"{n.nemesis_kills}, restart failures {n.restart_failures}, tracebacks in log {n.tracebacks}, "
                f"lease sessions lost {n.lease_losses}; "
                f"log {n.log_path}"
            )
            lines += [f"    {exit_}" for exit_ in n.unexpected_exits]
            lines += [f"    {orphan}" for orphan in n.orphans]
            lines += [f"    start failure: {failure}" for failure in n.start_failures]
        for name, ids in sorted(self.examples.items()):
            lines.append(f"examples of {name}: {', '.join(ids)}")
        lines += [f"HARNESS ERROR: {e}" for e in self.harness_errors]
        lines += [f"VIOLATION: {v}" for v in self.violations]
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


# --- narrative --------------------------------------------------------------------------------


class Narrator:
    """Timestamped lines to stdout and to ``harness.log``: a fault is only useful evidence if it
    can be lined up with the node logs, which carry wall-clock times."""

    def __init__(self, path: Path, t0: float, echo: bool) -> None:
        self.t0 = t0
        self.echo = echo
        self._file = open(path, "a", encoding="utf-8")  # closed by close()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        line = f"[nemesis {stamp} t={self.elapsed():7.2f}s] {message}"
        if self.echo:
            print(line, flush=True)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# --- node processes ---------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now; the node keeps it across restarts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NodeProcess:
    """One ``dw-server serve`` node: a fixed port, node id and data directory for its whole life,
    so a restart is the same member coming back. Its output is appended to one log file across
    restarts. ``expect_exit`` says whether an exit now was caused by the harness."""

    def __init__(self, node_id: str, port: int, database: str, data_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        self.node_id = node_id
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.database = database
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.expect_exit = True  # nothing is running yet
        self.stopped = False  # SIGSTOPped by the nemesis
        self.generations = 0
        self.nemesis_kills = 0
        self.restart_failures = 0
        self.start_failures: list[str] = []  # attempts whose process exited before listening
        self.unexpected_exits: list[str] = []
        self.orphans: list[str] = []  # helper processes that outlived the node's main process
        self.tree: list[tuple[int, int]] = []  # last seen (pid, start time) of the node's processes
        self.lock = asyncio.Lock()  # one fault or restart at a time
        self._log_offset = 0

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Start the process and wait for its "listening on" line (blocking; run in a thread).
        A restart right after SIGKILL may race the old socket, so a failed start is retried."""
        last = ""
        for _ in range(attempts):
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                log.write(f"=== nemesis: starting {self.node_id} process #{self.generations + 1} at "
                          f"{time.strftime('%H:%M:%S')} ===\n".encode())
                log.flush()
                self._log_offset = log.tell()
                cmd = [sys.executable, "-m", "ops.cli", "serve", "--port", str(self.port),
                       "--data-dir", str(self.data_dir), "--database", self.database]
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=PROJECT_ROOT)
            self.generations += 1
            ready = re.compile(rf"listening on http://127\.0\.0\.1:{self.port}\b")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if ready.search(self.own_log()):
                    self.expect_exit = False
                    self.refresh_tree()
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
            last = "\n".join(self.own_log().splitlines()[-15:])
            if self.proc.poll() is None:
                members = process_tree(self.proc.pid)
                self.proc.kill()
                self.proc.wait(10)
                self.reap_orphans(members, f"after process #{self.generations} hung while starting")
                self.start_failures.append(f"process #{self.generations} did not listen within {timeout:.0f} s")
            else:
                tail = " | ".join(line.strip() for line in last.splitlines()[-4:])
                self.start_failures.append(f"process #{self.generations} exited with code {self.proc.returncode} "
                                           f"while starting: {tail[:400]}")
            time.sleep(1.0)
        self.restart_failures += 1
        raise RuntimeError(f"{self.node_id} did not start after {attempts} attempts:\n{last}")

    def own_log(self) -> str:
        """The log of the current process only."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive() and self.proc is not None else None

    def refresh_tree(self) -> None:
        if self.alive() and self.proc is not None:
            self.tree = process_tree(self.proc.pid) or self.tree

    def freeze(self, whole_tree: bool) -> list[int]:
        """SIGSTOP the main process (a hung event loop) or every process of the node (a frozen
        host); returns the pids stopped, which ``thaw`` must continue."""
        self.refresh_tree()
        pids = [pid for pid, _ in self.tree] if whole_tree else ([self.proc.pid] if self.proc else [])
        signal_all(pids, signal.SIGSTOP)
        self.stopped = True
        return pids

    def thaw(self, pids: list[int]) -> None:
        signal_all(pids, signal.SIGCONT)
        self.stopped = False

    def reap_orphans(self, members: list[tuple[int, int]], when: str) -> None:
        """Helpers of a dead main process must die with it (a surviving lease session would
        hold the node's shards); any still running after 3 s is recorded and killed."""
        helpers = members[1:]
        deadline = time.monotonic() + 3.0
        while still_running(helpers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = still_running(helpers)
        if left:
            self.orphans.append(f"{when}: helper process(es) {left} outlived the main process")
            signal_all(left, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the main process (as the nemesis): the exit that follows is expected."""
        self.expect_exit = True
        self.refresh_tree()
        members = list(self.tree)
        if self.alive() and self.proc is not None:
            signal_all([pid for pid, _ in members], signal.SIGCONT)  # never leave a frozen helper behind
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.stopped = False
        self.reap_orphans(members, "after SIGKILL")

    def shutdown(self) -> int | None:
        """End of run: wake it if frozen, ask it to stop, kill it if it does not (blocking)."""
        self.expect_exit = True
        if self.proc is None:
            return None
        self.refresh_tree()
        members = list(self.tree)
        if self.proc.poll() is None:
            signal_all([pid for pid, _ in members], signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.stopped = False
        self.reap_orphans(members, "after shutdown")
        return self.proc.returncode

    def log_counts(self) -> tuple[int, int]:
        """Tracebacks and lease-session losses the node logged (informational figures)."""
        try:
            text = Path(self.log_path).read_text("utf-8", "replace")
        except OSError:
            return 0, 0
        return text.count("Traceback"), len(re.findall(r"lost its shard lease session", text))


def _start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (field 22 of its stat): with the pid, an identity that
    survives pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_tree(pid: int) -> list[tuple[int, int]]:
    """``pid`` and its descendants as (pid, start time). A node is more than one process (its
    shard-lease session runs in a child), so its sockets, its freeze and its death all have to
    be taken over the whole tree."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    pids = [pid]
    for current in pids:
        pids.extend(children.get(current, []))
    found = [(p, _start_time(p)) for p in pids]
    return [(p, t) for p, t in found if t is not None]


def still_running(members: list[tuple[int, int]]) -> list[int]:
    """Which of these (pid, start time) processes are still the same live processes."""
    alive = []
    for pid, started in members:
        if _start_time(pid) != started:
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            target = os.readlink(f"{fd_dir}/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def database_client_ports(pids: list[int], db_port: int) -> set[int]:
    """Local ports of the TCP connections these processes hold to ``db_port``: they are the
    ``pg_stat_activity.client_port`` of their backends. The journal pool sets no application
    name, so the sockets a node's processes hold are the only reliable way to tell its sessions
    from other nodes' (``/proc/<pid>/net/tcp*`` lists the whole network namespace; the
    processes' own fds say which of those sockets are theirs)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            inodes |= _socket_inodes(pid)
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pids[0]}/net/{table}", encoding="ascii") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[9] not in inodes:
                continue
            if int(cols[2].rsplit(":", 1)[1], 16) == db_port:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


# --- PostgreSQL -------------------------------------------------------------------------------


def _dsn_host_port(dsn: str) -> tuple[str, int]:
    parts = urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def _schema_of(dsn: str) -> str | None:
    values = parse_qs(urlsplit(dsn).query).get("search_path")
    return values[0] if values else None


async def _pg_execute(dsn: str, sql: str, *args: Any) -> list[Any]:
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


# --- client operations with retries -----------------------------------------------------------


def error_name(exc: BaseException) -> str:
    """A short, countable name for a failed call: the exception type, with the HTTP status when
    the server answered (a 500 is a server bug, a 503 a retryable refusal; both are ServerError)."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "Timeout"
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}({status})" if isinstance(status, int) else type(exc).__name__


class NodeDown(Exception):
    """The fault's target is not running (it died on its own): the fault is skipped, and the
    death is already recorded as the violation it is."""


class GaveUp(Exception):
    """A logical operation did not succeed within its deadline through any node."""


@dataclass
class ClientStats:
    errors: Counter[str] = field(default_factory=Counter)  # per operation kind
    error_types: Counter[str] = field(default_factory=Counter)  # "kind:ExceptionType"
    gave_up: Counter[str] = field(default_factory=Counter)
    failovers: int = 0
    slowest_failover: float = 0.0
    slowest_failover_op: str = ""


class Operations:
    """Client calls as logical operations: each attempt is bounded, a failed attempt is counted
    and retried with backoff through the next node, and the time from the start of the first
    failed attempt to the success is the operation's failover time (a frozen node counts from
    the moment the call went to it, not from when the harness stopped waiting)."""

    def __init__(self, clients: list[Client], stats: ClientStats, narrator: Narrator, attempt_timeout: float,
                 deadline: float) -> None:
        self.clients = clients
        self.stats = stats
        self.narrator = narrator
        self.attempt_timeout = attempt_timeout
        self.deadline = deadline
        self._reported: set[str] = set()

    async def call(self, kind: str, label: str, node: int, fn: Callable[[Client], Awaitable[T]],
                   deadline: float | None = None) -> T:
        began = time.monotonic()
        limit = began + (self.deadline if deadline is None else deadline)
        first_failure: float | None = None
        backoff = 0.2
        while True:
            attempt_began = time.monotonic()
            try:
                result = await asyncio.wait_for(fn(self.clients[node]), self.attempt_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is counted and retried
                name = error_name(exc)
                key = f"{kind}:{name}"
                self.stats.errors[kind] += 1
                self.stats.error_types[key] += 1
                if key not in self._reported or name == "Timeout":  # the first of each kind; every timeout
                    # (a request that hung is what a failover must prevent: which node, and when, tells why)
                    self._reported.add(key)
                    self.narrator.say(f"client error ({kind} {label} via node {node + 1}): {name}: {str(exc)[:200]}")
                if first_failure is None:
                    first_failure = attempt_began
                if time.monotonic() + backoff > limit:
                    self.stats.gave_up[kind] += 1
                    raise GaveUp(f"{kind} {label}: {name}: {exc}") from exc
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 2.0)
                node = (node + 1) % len(self.clients)
                continue
            if first_failure is not None:
                took = time.monotonic() - first_failure
                self.stats.failovers += 1
                if took > self.stats.slowest_failover:
                    self.stats.slowest_failover = took
                    self.stats.slowest_failover_op = f"{kind} {label}"
            return result


# --- the run ----------------------------------------------------------------------------------


@dataclass
class WorkflowRecord:
    workflow_id: str
    n: int
    token: str
    request_id: str
    first_node: int
    submitted_at: float
    start_acked_at: float | None = None
    run_id: str | None = None
    signal_acked_at: float | None = None
    signal_command_id: str | None = None
    signal_gave_up: bool = False
    start_gave_up: bool = False
    completed_seen_at: float | None = None
    last_polled: float = 0.0
    closed_status: str | None = None


def plan_faults(rng: random.Random, duration: float, nodes: int, interval: tuple[float, float],
                stop_seconds: float) -> list[PlannedFault]:
    """The whole fault schedule, drawn up front from the seed so that a run can be replayed.
    Gaps are measured from the (nominal) end of the previous fault; a fault is planned if it
    begins at least 5 s before the load phase ends (the load goes on until the last fault is
    over, so a fault never hits an idle cluster). Exactly one fault is the PostgreSQL restart."""
    nominal = {"kill": 6.0, "stop": stop_seconds, "pg_terminate": 1.0, "pg_restart": 6.0}
    plan: list[PlannedFault] = []
    at = 0.0
    while True:
        fault = PlannedFault(rng.uniform(*interval), rng.choice(FAULT_KINDS), rng.randrange(nodes), rng.uniform(0.5, 3.0),
                             rng.choice(("process", "tree")))
        if at + fault.gap > duration - 5:
            break
        plan.append(fault)
        at += fault.gap + nominal[fault.kind]
    if plan:
        plan[rng.randrange(len(plan))].kind = "pg_restart"
    else:
        plan.append(PlannedFault(min(interval[0], duration / 2), "pg_restart", 0, 0.0))
    return plan


class Run:
    """The state of one nemesis run; ``execute`` drives it from start to teardown."""

    def __init__(self, cfg: NemesisConfig) -> None:
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.log_dir = Path(cfg.log_dir) if cfg.log_dir else Path(tempfile.mkdtemp(prefix=f"dw-nemesis-{cfg.seed}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.narrator = Narrator(self.log_dir / "harness.log", self.t0, cfg.echo)
        self.tag = f"nx{uuid.uuid4().hex[:6]}"
        self.task_queue = f"{self.tag}-q"
        self.fault_rng = random.Random(cfg.seed)
        self.load_rng = random.Random(cfg.seed * 7919 + 1)  # the load never shifts the fault schedule
        self.result = NemesisResult(seed=cfg.seed, faults_enabled=cfg.faults, log_dir=str(self.log_dir))
        self.nodes: list[NodeProcess] = []
        self.records: dict[str, WorkflowRecord] = {}
        self.stats = ClientStats()
        self.ops: Operations | None = None
        self.pending: set[asyncio.Task[None]] = set()  # start and signal operations in flight
        self.nemesis_done = asyncio.Event()
        self.stopping = asyncio.Event()
        self.last_fault_end: float | None = None
        self.worker_restarts = 0
        self.own_schema: str | None = None
        self.load_end = float("inf")  # set when the load begins
        self.dsn = ""
        self.base_dsn = ""

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run_time_of(self, stamp: str | None) -> float | None:
        """A server timestamp (ISO 8601, UTC) as seconds since the run began."""
        if not stamp:
            return None
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - self.t0_wall
        except ValueError:
            return None

    def say(self, message: str) -> None:
        self.narrator.say(message)

    # --- setup -------------------------------------------------------------------------

    async def create_schema(self) -> None:
        given = self.cfg.database or os.environ.get("DW_DATABASE_URL") or DEFAULT_DATABASE
        if _schema_of(given):
            self.dsn = self.base_dsn = given  # the caller owns this schema
            return
        self.base_dsn = given
        self.own_schema = f"nemesis_{self.cfg.seed}_{uuid.uuid4().hex[:8]}"
        await _pg_execute(given, f"CREATE SCHEMA {self.own_schema}")
        self.dsn = f"{given}{'&' if '?' in given else '?'}search_path={self.own_schema}"
        self.say(f"created schema {self.own_schema}")

    def make_nodes(self) -> None:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("DW_")}
        for i in range(self.cfg.nodes):
            port = free_port()
            node_id = f"{self.tag}-n{i + 1}"
            env = {
                **base_env,
                "DW_NODE_ID": node_id,
                "DW_SHARD_COUNT": str(self.cfg.shard_count),
                "DW_ADVERTISE_URL": f"http://127.0.0.1:{port}",
                "DW_WORKFLOW_TASK_LEASE_SECONDS": str(self.cfg.workflow_task_lease_seconds),
                "DW_ACTIVITY_LEASE_SECONDS": str(self.cfg.activity_lease_seconds),
                "DW_ACTOR_IDLE_SECONDS": str(self.cfg.actor_idle_seconds),
                "PYTHONUNBUFFERED": "1",
            }
            self.nodes.append(NodeProcess(node_id, port, self.dsn, self.log_dir / f"node-{i + 1}",
                                          self.log_dir / f"node-{i + 1}.log", env))

    async def converge(self, client: Client) -> None:
        """Wait until every node holds a share, so the first fault hits a settled cluster."""
        owned: dict[str, int] = {}
        for _ in range(60):
            with contextlib.suppress(Exception):
                view = (await asyncio.wait_for(client.get_cluster_info(), 5))["cluster"]
                owned = {n["node_id"]: n.get("shards_owned", 0) for n in view.get("nodes", [])}
                if all(owned.get(n.node_id, 0) > 0 for n in self.nodes) and sum(owned.values()) == self.cfg.shard_count:
                    self.say(f"cluster converged: {owned}")
                    return
            await asyncio.sleep(0.5)
        self.say(f"warning: the cluster did not converge within 30 s: {owned}")

    # --- load --------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def starter(self) -> None:
        """Start ``rate`` workflows a second, round-robin over the nodes, until the load phase
        (and every planned fault) is over. Each start is its own task so a slow one never
        holds back the rate; a bound on those in flight keeps a dead cluster from piling up."""
        inflight = asyncio.Semaphore(max(20, int(self.cfg.rate * 30)))
        i = 0
        began = self.now()
        while self.now() < self.load_end or not self.nemesis_done.is_set():
            due = began + i / self.cfg.rate
            if due > self.now():
                await asyncio.sleep(due - self.now())
            await inflight.acquire()
            wid = f"{self.tag}-{i:06d}"
            record = WorkflowRecord(wid, i, f"token-{wid}", f"{wid}-{SIGNAL_NAME}", i % len(self.nodes), self.now())
            self.records[wid] = record

            async def start_one(rec: WorkflowRecord = record) -> None:
                try:
                    await self.start_and_signal(rec)
                finally:
                    inflight.release()

            self.spawn(start_one())
            i += 1

    async def start_and_signal(self, rec: WorkflowRecord) -> None:
        assert self.ops is not None

        async def start(client: Client) -> Any:
            return await client.start_workflow(
                workflow_type=WORKFLOW_TYPE, workflow_id=rec.workflow_id, task_queue=self.task_queue, input=[rec.n],
                duplicate_policy="use-existing",  # a retry after a lost answer returns the first run
            )

        try:
            handle = await self.ops.call("start", rec.workflow_id, rec.first_node, start)
        except GaveUp as exc:
            rec.start_gave_up = True
            self.say(f"gave up starting {rec.workflow_id}: {exc}")
            return
        rec.start_acked_at = self.now()
        rec.run_id = handle.run_id
        await asyncio.sleep(self.load_rng.uniform(0.5, 2.0))

        async def send(client: Client) -> dict[str, Any]:
            return await client.signal_workflow(rec.workflow_id, SIGNAL_NAME, args=[rec.token], request_id=rec.request_id)

        try:
            receipt = await self.ops.call("signal", rec.workflow_id, self.load_rng.randrange(len(self.nodes)), send)
        except GaveUp as exc:
            rec.signal_gave_up = True
            self.say(f"gave up signalling {rec.workflow_id}: {exc}")
            return
        rec.signal_acked_at = self.now()
        rec.signal_command_id = receipt.get("command_id")

    async def completion_monitor(self, clients: list[Client]) -> None:
        """Observe when each signalled workflow completes (describe, one attempt per round; a
        failure is counted and the next round is the retry). Polled every 2 s under load and
        every 1 s in the quiet phase, which is the resolution of the 60 s completion check."""
        sem = asyncio.Semaphore(8)
        turn = 0

        async def poll(rec: WorkflowRecord, client: Client) -> None:
            async with sem:
                rec.last_polled = self.now()
                try:
                    described = await asyncio.wait_for(client.describe_workflow(rec.workflow_id), self.cfg.attempt_timeout)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - counted; the next round retries
                    self.stats.errors["monitor"] += 1
                    self.stats.error_types[f"monitor:{error_name(exc)}"] += 1
                    return
                if described.status and described.status not in ("running", "pending", "waiting"):
                    rec.completed_seen_at = self.now()
                    rec.closed_status = described.status

        while not self.stopping.is_set():
            every = 1.0 if self.nemesis_done.is_set() and self.now() >= self.load_end else 2.0
            due = [r for r in self.records.values() if r.signal_acked_at is not None and r.completed_seen_at is None
                   and self.now() - r.last_polled >= every]
            jobs = []
            for rec in due:
                turn += 1
                jobs.append(poll(rec, clients[turn % len(clients)]))
            if jobs:
                await asyncio.gather(*jobs)
            await asyncio.sleep(0.5)

    async def supervise_worker(self, index: int) -> None:
        """One SDK worker polling node ``index``; if it exits on its own (its node was down when
        it registered, say) it is recreated, and counted."""
        node = self.nodes[index]
        generation = 0
        while not self.stopping.is_set():
            generation += 1
            async with Client(node.url, timeout=15) as client:
                worker = Worker(
                    client, task_queue=self.task_queue, workflows=[NemesisOrder], activities=[reserve, confirm],
                    worker_id=f"{self.tag}-w{index + 1}-{generation}", poll_timeout=5, shutdown_timeout=5,
                )
                task = asyncio.ensure_future(worker.run())
                stop = asyncio.ensure_future(self.stopping.wait())
                try:
                    await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                if task.done():
                    problem = task.exception() if not task.cancelled() else "cancelled"
                    self.worker_restarts += 1
                    self.say(f"SDK worker on node {index + 1} exited ({problem!r}); recreating it")
                    await asyncio.sleep(1.0)
                    continue
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker.stop(), 3)  # a parked poll may hold it; then cancel
                task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, 10)

    async def progress(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(10)
            recs = list(self.records.values())
            self.say(
                f"progress: submitted {len(recs)}, started {sum(r.start_acked_at is not None for r in recs)}, "
                f"signalled {sum(r.signal_acked_at is not None for r in recs)}, "
                f"completed {sum(r.completed_seen_at is not None for r in recs)}, "
                f"client errors {sum(self.stats.errors.values())}, nodes up "
                f"{sum(n.alive() for n in self.nodes)}/{len(self.nodes)}"
            )

    # --- nodes dying on their own ------------------------------------------------------

    def notice_deaths(self) -> list[NodeProcess]:
        dead = []
        for node in self.nodes:
            if node.expect_exit or node.proc is None or node.proc.poll() is None:
                continue
            tail = " | ".join(line.strip() for line in node.own_log().splitlines()[-8:])
            entry = f"t={self.now():.1f}s pid {node.proc.pid} exited with code {node.proc.returncode}: {tail}"
            node.unexpected_exits.append(entry)
            node.expect_exit = True  # recorded once
            self.say(f"NODE {node.node_id} DIED ON ITS OWN: {entry}")
            dead.append(node)
        return dead

    async def death_watch(self) -> None:
        """A node process that exits without the nemesis killing it is a violation; it is
        restarted so the rest of the run still measures the cluster it was meant to."""
        while not self.stopping.is_set():
            for node in self.nodes:
                if not node.lock.locked():
                    node.refresh_tree()
            for node in self.notice_deaths():
                self.spawn_restart(node)
            await asyncio.sleep(0.5)

    def spawn_restart(self, node: NodeProcess) -> None:
        members, when = list(node.tree), f"after the exit at t={self.now():.1f}s"

        async def restart() -> None:
            async with node.lock:
                await asyncio.to_thread(node.reap_orphans, members, when)
                if node.alive() or self.stopping.is_set() or not self.cfg.restart_dead_nodes:
                    return
                await asyncio.sleep(1.0)
                try:
                    await asyncio.to_thread(node.start)
                    self.say(f"restarted {node.node_id} after it died (pid {node.pid})")
                except RuntimeError as exc:
                    self.say(f"could not restart {node.node_id}: {exc}")

        task = asyncio.ensure_future(restart())
        self.pending.add(task)  # awaited/cancelled with the rest at the end
        task.add_done_callback(self.pending.discard)

    # --- faults ------------------------------------------------------------------------

    async def nemesis(self, plan: list[PlannedFault]) -> None:
        try:
            for planned in plan:
                await asyncio.sleep(planned.gap)
                if self.stopping.is_set():
                    return
                record = await self.inject(planned)
                self.result.faults.append(record)
                self.last_fault_end = record.ended
        finally:
            self.nemesis_done.set()

    async def inject(self, planned: PlannedFault) -> FaultRecord:
        node = self.nodes[planned.node]
        started = self.now()
        kind = planned.kind
        target = None if kind == "pg_restart" else node.node_id
        self.say(f"FAULT {kind} -> {target or 'PostgreSQL'} begins")
        injected = True
        try:
            if kind == "kill":
                detail = await self.fault_kill(node, planned.downtime)
            elif kind == "stop":
                detail = await self.fault_stop(node, planned.scope)
            elif kind == "pg_terminate":
                detail = await self.fault_pg_terminate(node)
            else:
                detail = await self.fault_pg_restart()
        except NodeDown as exc:
            injected = False
            detail = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001 - recorded as a fault the harness failed to inject
            injected = False
            detail = f"could not inject: {type(exc).__name__}: {exc}"
            self.result.harness_errors.append(f"fault {kind} on {target or 'PostgreSQL'} at t={started:.1f}s: {detail}")
        ended = self.now()
        self.say(f"FAULT {kind} -> {target or 'PostgreSQL'} ends after {ended - started:.1f} s: {detail}")
        return FaultRecord(kind, target, started, ended, detail, injected)

    async def fault_kill(self, node: NodeProcess, downtime: float) -> str:
        async with node.lock:
            was = node.pid
            if was is None:
                raise NodeDown(f"{node.node_id} is not running (it died and was not restarted yet)")
            await asyncio.to_thread(node.kill)
            node.nemesis_kills += 1
            await asyncio.sleep(downtime)
            await asyncio.to_thread(node.start)
            return f"SIGKILLed pid {was}, down {downtime:.1f} s, restarted as pid {node.pid}"

    async def fault_stop(self, node: NodeProcess, scope: str) -> str:
        async with node.lock:
            if node.pid is None:
                raise NodeDown(f"{node.node_id} is not running (it died and was not restarted yet)")
            pids = node.freeze(whole_tree=scope == "tree")
            try:
                await asyncio.sleep(self.cfg.stop_seconds)
            finally:
                node.thaw(pids)
            what = "main process" if scope == "process" else "whole process tree"
            return f"SIGSTOP {what} {pids} for {self.cfg.stop_seconds:.0f} s, then SIGCONT"

    async def fault_pg_terminate(self, node: NodeProcess) -> str:
        async with node.lock:
            pid = node.pid
            if pid is None:
                raise NodeDown(f"{node.node_id} is not running (it died and was not restarted yet)")
            _, db_port = _dsn_host_port(self.dsn)
            node.refresh_tree()
            pids = [p for p, _ in node.tree]
            ports = await asyncio.to_thread(database_client_ports, pids, db_port)
            app = f"dw-shard-leases:{node.node_id}"[:63]
            rows = await _pg_execute(
                self.base_dsn,
                "SELECT pid, application_name, client_port, pg_terminate_backend(pid) AS done FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND datname = current_database() AND ("
                "  (host(client_addr) IN ('127.0.0.1', '::1') AND client_port = ANY($1::int4[]))"
                "  OR application_name = $2)",
                sorted(ports), app,
            )
            if not rows:
                raise RuntimeError(f"no backend of {node.node_id} found (pids {pids}, client ports {sorted(ports)})")
            leases = sum(r["application_name"] == app for r in rows)
            return (f"terminated {sum(bool(r['done']) for r in rows)}/{len(rows)} backends of pids {pids} "
                    f"({leases} lease session, {len(rows) - leases} other; sockets seen {len(ports)})")

    async def fault_pg_restart(self) -> str:
        host, port = _dsn_host_port(self.dsn)
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise RuntimeError(f"PostgreSQL at {host} is not local; it cannot be restarted")
        began = time.monotonic()
        await asyncio.to_thread(pg_ctl, "restart")
        if not await asyncio.to_thread(wait_pg_ready, host, port, 60):
            raise RuntimeError("PostgreSQL did not accept connections within 60 s of the restart")
        return f"pg_ctlcluster restart, accepting connections again after {time.monotonic() - began:.1f} s"

    # --- quiet phase and check ---------------------------------------------------------

    async def ownership_snapshot(self) -> str:
        """Evidence for a stuck cluster: what each node's /api/cluster/info says it owns, and,
        per shard, the owner the ``shards`` table names against the node whose lease session
        actually holds the shard's advisory lock (two-key form: objid = shard, objsubid = 2)."""
        parts = []
        if self.ops is not None:
            for i, client in enumerate(self.ops.clients):
                try:
                    view = (await asyncio.wait_for(client.get_cluster_info(), 5))["cluster"]
                    owned = {n["node_id"].removeprefix(f"{self.tag}-"): n.get("shards_owned") for n in view.get("nodes", [])}
                    parts.append(f"node {i + 1} sees {owned}")
                except Exception as exc:  # noqa: BLE001 - diagnostics only
                    parts.append(f"node {i + 1}: cluster info failed ({type(exc).__name__})")
        try:
            rows = await _pg_execute(
                self.dsn,
                "SELECT s.shard_id, s.owner_node, a.application_name AS holder FROM shards s"
                " LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.objid = s.shard_id"
                "  AND l.pid IN (SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1)"
                " LEFT JOIN pg_stat_activity a ON a.pid = l.pid ORDER BY s.shard_id",
                f"dw-shard-leases:{self.tag}-%",
            )
            odd = []
            for r in rows:
                holder = (r["holder"] or "").removeprefix("dw-shard-leases:") or None
                if holder != r["owner_node"]:
                    odd.append(f"{r['shard_id']}: table {r['owner_node'] or '-'}, lock {holder or '-'}")
            parts.append("shards whose owner mark and lock disagree: " + ("; ".join(odd) if odd else "none"))
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            parts.append(f"shard table unreadable ({type(exc).__name__}: {exc})")
        return "; ".join(parts)

    def outstanding(self) -> list[WorkflowRecord]:
        return [r for r in self.records.values() if r.signal_acked_at is not None and r.completed_seen_at is None]

    async def quiet_phase(self) -> None:
        begun = self.now()
        until = begun + self.cfg.quiet_seconds
        self.say(f"quiet phase: no more faults or starts; waiting up to {self.cfg.quiet_seconds:.0f} s")
        while self.now() < until:
            if not self.pending and not self.outstanding():
                break
            await asyncio.sleep(0.5)
        self.say(f"quiet phase over after {self.now() - begun:.1f} s: {len(self.outstanding())} workflows still "
                 f"open, {len(self.pending)} client operations still in flight")
        self.say(f"ownership: {await self.ownership_snapshot()}")

    async def check(self) -> None:
        """Read every acknowledged workflow back and count the violations."""
        assert self.ops is not None
        ops = self.ops
        counts: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        sem = asyncio.Semaphore(6)
        check_time = self.now()
        check_end = time.monotonic() + self.cfg.check_seconds

        def remaining() -> float:
            """Every read shares one deadline: a cluster that cannot answer makes the check
            report unreadable workflows, not run for an hour."""
            return max(1.0, check_end - time.monotonic())

        def bad(kind: str, rec: WorkflowRecord, note: str = "") -> None:
            counts[kind] += 1
            if len(examples.setdefault(kind, [])) < 5:
                examples[kind].append(rec.workflow_id + (f" ({note})" if note else ""))

        async def describe_or_none(wid: str, node: int) -> Any:
            async def fn(client: Client) -> Any:
                try:
                    return await client.describe_workflow(wid)
                except WorkflowNotFound:
                    return None

            return await ops.call("check", wid, node, fn, deadline=remaining())

        async def history(wid: str, run_id: str, node: int) -> list[dict[str, Any]]:
            async def fn(client: Client) -> list[dict[str, Any]]:
                events: list[dict[str, Any]] = []
                token = None
                while True:
                    page = await client.get_history(wid, run_id, page_size=1000, next_page_token=token)
                    events += page["events"]
                    token = page.get("next_page_token")
                    if not token:
                        return events

            return await ops.call("check", wid, node, fn, deadline=remaining())

        async def check_one(rec: WorkflowRecord) -> None:
            async with sem:
                node = rec.n % len(self.nodes)
                try:
                    described = await describe_or_none(rec.workflow_id, node)
                    if described is None:  # ask another node before calling it lost
                        await asyncio.sleep(1)
                        described = await describe_or_none(rec.workflow_id, (node + 1) % len(self.nodes))
                    if described is None:
                        bad("lost_starts", rec, "describe: not found on two nodes")
                        return
                    events = await history(rec.workflow_id, described.run_id, node)
                except GaveUp as exc:
                    bad("unreadable", rec, str(exc)[:120])
                    return
            self.judge(rec, described, events, check_time, bad)

        await asyncio.gather(*(check_one(r) for r in self.records.values() if r.start_acked_at is not None))
        self.result.counts = dict(counts)
        self.result.examples = examples

    def judge(self, rec: WorkflowRecord, described: Any, events: list[dict[str, Any]], check_time: float,
              bad: Callable[..., None]) -> None:
        """The invariants of one acknowledged workflow, from its describe and full history. Each
        kind of violation counts once per workflow, whatever number of ways it shows."""
        seen_kinds: set[str] = set()
        report = bad

        def bad(kind: str, rec: WorkflowRecord, note: str = "") -> None:
            if kind not in seen_kinds:
                seen_kinds.add(kind)
                report(kind, rec, note)

        if described.run_id != rec.run_id:
            bad("run_replaced", rec, f"acknowledged run {rec.run_id}, now {described.run_id}")
        seqs = [e.get("sequence") for e in events]
        if len(seqs) != len(set(seqs)):
            bad("duplicate_events", rec, "two events share a sequence")
        elif seqs != list(range(1, len(seqs) + 1)):
            bad("gaps", rec, f"sequences {seqs[:3]}..{seqs[-3:]} of {len(seqs)}")
        once = ("StartAccepted", "WorkflowStarted", "ActivityScheduled", "ActivityCompleted", "TimerScheduled",
                "TimerFired", "WorkflowCompleted", "WorkflowFailed")
        steps = [(e["event_type"], (e.get("payload") or {}).get("sequence")) for e in events if e.get("event_type") in once]
        repeated = [s for s, k in Counter(steps).items() if k > 1]
        if repeated:
            bad("duplicate_events", rec, f"repeated steps {repeated[:3]}")
        if rec.signal_acked_at is not None:
            proceed = [e for e in events if e.get("event_type") == "SignalReceived"
                       and (e.get("payload") or {}).get("signal_name") == SIGNAL_NAME]
            commands = {e.get("workflow_command_id") for e in proceed}
            if not proceed or (rec.signal_command_id and rec.signal_command_id not in commands):
                bad("lost_signals", rec, f"acknowledged command {rec.signal_command_id}, history has {sorted(map(str, commands))}")
            elif len(proceed) > 1:
                bad("duplicate_signals", rec, f"{len(proceed)} SignalReceived")
            else:
                payload = proceed[0].get("payload") or {}
                try:
                    arguments = serializer.decode(payload.get("arguments"), payload.get("payload_codec"))
                except Exception as exc:  # noqa: BLE001 - an undecodable payload is a wrong payload
                    arguments = f"undecodable: {exc}"
                if arguments != [rec.token]:
                    bad("wrong_results", rec, f"signal payload {arguments!r}")
        status = described.status
        if status == "completed":
            if described.output != expected_result(rec.n, rec.token):
                bad("wrong_results", rec, f"output {described.output!r}")
            # Observed completion is what a client saw; the history's WorkflowCompleted time (same
            # host clock) bounds it from below, so a monitor that fell behind under load is not
            # mistaken for a late workflow.
            seen = rec.completed_seen_at if rec.completed_seen_at is not None else check_time
            recorded = self.run_time_of(next((e.get("recorded_at") for e in reversed(events)
                                              if e.get("event_type") == "WorkflowCompleted"), None))
            done_at = min(seen, recorded) if recorded is not None else seen
            deadline = max(self.last_fault_end or 0.0, rec.start_acked_at or 0.0) + self.cfg.completion_deadline
            self.result.completed += 1
            if done_at > deadline:
                bad("late", rec, f"completed at t={done_at:.1f}s (observed t={seen:.1f}s), due by t={deadline:.1f}s")
            else:
                self.result.completed_on_time += 1
        elif status in ("running", "pending", "waiting", None):
            last = events[-1]["event_type"] if events else "no events"
            bad("stuck", rec, f"{status}, last event {last}" + (", signal never acknowledged" if rec.signal_gave_up else ""))
        else:
            bad("wrong_results", rec, f"closed as {status}")

    # --- verdict -----------------------------------------------------------------------

    def verdict(self) -> None:
        r = self.result
        recs = list(self.records.values())
        r.workflows_submitted = len(recs)
        r.starts_acknowledged = sum(x.start_acked_at is not None for x in recs)
        r.starts_unacknowledged = sum(x.start_gave_up or (x.start_acked_at is None) for x in recs)
        r.signals_acknowledged = sum(x.signal_acked_at is not None for x in recs)
        r.signals_unacknowledged = sum(x.start_acked_at is not None and x.signal_acked_at is None for x in recs)
        r.faults_by_kind = dict(Counter(f.kind for f in r.faults if f.injected))
        took = sorted(x.completed_seen_at - x.start_acked_at for x in recs
                      if x.completed_seen_at is not None and x.start_acked_at is not None)
        if took:
            r.latency = {"p50": took[len(took) // 2], "p99": took[min(len(took) - 1, int(len(took) * 0.99))], "max": took[-1]}
        r.last_fault_end = self.last_fault_end
        r.client_errors = sum(self.stats.errors.values())
        r.client_errors_by_op = dict(self.stats.errors)
        r.client_error_types = dict(self.stats.error_types)
        r.failovers = self.stats.failovers
        r.slowest_failover = self.stats.slowest_failover
        r.slowest_failover_op = self.stats.slowest_failover_op
        r.worker_restarts = self.worker_restarts
        r.nodes = [
            NodeReport(n.node_id, n.url, n.generations, n.nemesis_kills, list(n.unexpected_exits), n.restart_failures,
                       n.log_counts()[0], str(n.log_path), list(n.orphans), n.log_counts()[1], list(n.start_failures))
            for n in self.nodes
        ]
        names = {
            "lost_starts": "acknowledged starts lost", "lost_signals": "acknowledged signals lost",
            "duplicate_signals": "signals recorded more than once", "duplicate_events": "histories with duplicate events",
            "gaps": "histories with gaps", "wrong_results": "wrong results", "stuck": "workflows never completed",
            "late": f"workflows completed more than {self.cfg.completion_deadline:.0f} s after the last fault",
            "run_replaced": "acknowledged runs replaced by another run", "unreadable": "workflows the checker could not read",
        }
        for key, text in names.items():
            if r.counts.get(key):
                r.violations.append(f"{text}: {r.counts[key]} (e.g. {', '.join(r.examples.get(key, [])[:3])})")
        if r.starts_unacknowledged:
            r.violations.append(f"starts never acknowledged within {self.cfg.operation_deadline:.0f} s of retries: "
                                f"{r.starts_unacknowledged}")
        if r.signals_unacknowledged:
            r.violations.append(f"signals never acknowledged within {self.cfg.operation_deadline:.0f} s of retries: "
                                f"{r.signals_unacknowledged}")
        for n in r.nodes:
            if n.unexpected_exits:
                r.violations.append(f"node {n.node_id} died on its own {len(n.unexpected_exits)} time(s): "
                                    f"{n.unexpected_exits[0][:300]}")
            if n.start_failures:
                r.violations.append(f"node {n.node_id}: a process exited while starting {len(n.start_failures)} time(s): "
                                    f"{n.start_failures[0][:300]}")
            if n.orphans:
                r.violations.append(f"node {n.node_id}: {'; '.join(n.orphans)}")
            if n.restart_failures:
                r.violations.append(f"node {n.node_id} failed to start {n.restart_failures} time(s) (see {n.log_path})")
        if self.cfg.faults and not r.faults_by_kind.get("pg_restart"):
            r.harness_errors.append("the run did not restart PostgreSQL")

    # --- driver ------------------------------------------------------------------------

    async def execute(self) -> NemesisResult:
        cfg = self.cfg
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=16))
        sdk_log = logging.getLogger("durable_workflow")
        handler = logging.FileHandler(self.log_dir / "sdk.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        saved = (sdk_log.propagate, sdk_log.level)
        sdk_log.addHandler(handler)
        sdk_log.propagate = False
        sdk_log.setLevel(logging.INFO)
        plan = plan_faults(self.fault_rng, cfg.duration, cfg.nodes, cfg.fault_interval, cfg.stop_seconds) if cfg.faults else []
        self.say(f"seed {cfg.seed}: {cfg.nodes} nodes, {cfg.rate}/s for {cfg.duration:.0f} s, quiet phase up to "
                 f"{cfg.quiet_seconds:.0f} s, logs in {self.log_dir}")
        for p in plan:
            self.say(f"planned fault: +{p.gap:.1f}s {p.kind}" + ("" if p.kind == "pg_restart" else f" node {p.node + 1}")
                     + (f" (down {p.downtime:.1f} s)" if p.kind == "kill" else "")
                     + (f" ({p.scope})" if p.kind == "stop" else ""))
        background: list[asyncio.Task[None]] = []
        clients: list[Client] = []
        db_host, db_port = "127.0.0.1", 5432
        try:
            await self.create_schema()
            db_host, db_port = _dsn_host_port(self.dsn)
            self.make_nodes()
            await asyncio.gather(*(asyncio.to_thread(n.start) for n in self.nodes))
            for n in self.nodes:
                self.say(f"{n.node_id} listening on {n.url} (pid {n.pid}), log {n.log_path}")
            # The harness's own calls: no SDK-level retries, so every failure reaches Operations.
            clients = [Client(n.url, timeout=cfg.attempt_timeout, retry_policy=TransportRetryPolicy(max_attempts=1))
                       for n in self.nodes]
            self.ops = Operations(clients, self.stats, self.narrator, cfg.attempt_timeout, cfg.operation_deadline)
            await self.converge(clients[0])
            background = [asyncio.ensure_future(c) for c in (
                *(self.supervise_worker(i) for i in range(len(self.nodes))),
                self.completion_monitor(clients), self.death_watch(), self.progress(),
            )]
            self.load_end = self.now() + cfg.duration
            if plan:
                background.append(asyncio.ensure_future(self.nemesis(plan)))
            else:
                self.nemesis_done.set()
            await self.starter()
            await self.nemesis_done.wait()
            await self.quiet_phase()
            for node in self.notice_deaths():
                await asyncio.to_thread(node.reap_orphans, list(node.tree), "after an exit at the end of the quiet phase")
            self.stopping.set()
            for task in list(self.pending):
                task.cancel()
            await asyncio.gather(*background, *list(self.pending), return_exceptions=True)
            background = []
            self.say("checking every acknowledged workflow")
            await self.check()
            self.say(f"check done; ownership: {await self.ownership_snapshot()}")
            for node in self.notice_deaths():
                await asyncio.to_thread(node.reap_orphans, list(node.tree), "after an exit during the check")
        except Exception as exc:  # noqa: BLE001 - the run could not finish; say why, still tear down and report
            self.result.harness_errors.append(f"run aborted: {type(exc).__name__}: {exc}")
            self.say(f"RUN ABORTED: {type(exc).__name__}: {exc}")
        finally:
            self.stopping.set()
            for task in [*background, *self.pending]:
                task.cancel()
            await asyncio.gather(*background, *list(self.pending), return_exceptions=True)
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()
            codes = await asyncio.gather(*(asyncio.to_thread(n.shutdown) for n in self.nodes), return_exceptions=True)
            for n, code in zip(self.nodes, codes, strict=True):
                self.say(f"{n.node_id} shut down (exit code {code})")
            problem = await asyncio.to_thread(ensure_postgres_running, db_host, db_port)
            if problem:
                self.result.harness_errors.append(problem)
            if self.own_schema:
                try:
                    await _pg_execute(self.base_dsn, f"DROP SCHEMA IF EXISTS {self.own_schema} CASCADE")
                    self.say(f"dropped schema {self.own_schema}")
                except Exception as exc:  # noqa: BLE001 - reported, never masks the run's outcome
                    self.result.harness_errors.append(f"could not drop schema {self.own_schema}: {exc}")
            sdk_log.removeHandler(handler)
            handler.close()
            sdk_log.propagate, _ = saved
            sdk_log.setLevel(saved[1])
        self.verdict()
        self.result.elapsed = self.now()
        for line in self.result.summary().splitlines():
            self.say(line)
        self.narrator.close()
        return self.result


async def run_async(cfg: NemesisConfig) -> NemesisResult:
    """Run one nemesis pass inside an existing asyncio loop."""
    return await Run(cfg).execute()


def run(cfg: NemesisConfig) -> NemesisResult:
    """Run one nemesis pass to completion (its own event loop) and return what it found."""
    return asyncio.run(run_async(cfg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.nemesis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="load and fault phase, seconds (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="fault schedule and load seed (default: random, printed)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rate", type=float, default=10.0, help="workflows started per second")
    parser.add_argument("--database", default=None,
                        help="postgresql://… (default DW_DATABASE_URL or " + DEFAULT_DATABASE + "); a fresh schema is "
                             "created and dropped unless the URL names one with ?search_path=")
    parser.add_argument("--quiet-seconds", type=float, default=120.0, help="fault-free phase after the load, at most")
    parser.add_argument("--no-faults", action="store_true", help="the control run: same load, no faults")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--log-dir", default=None, help="where node and harness logs go (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--nodes, --rate and --duration must be positive")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    cfg = NemesisConfig(
        duration=args.duration, seed=seed, nodes=args.nodes, rate=args.rate, database=args.database,
        quiet_seconds=args.quiet_seconds, faults=not args.no_faults, shard_count=args.shards, log_dir=args.log_dir,
    )
    result = run(cfg)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
