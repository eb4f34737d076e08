"""The processes of a ``dw-server`` node: starting one and waiting for it to listen, freezing,
killing and shutting it down, and seeing its whole process tree and its database sockets
through ``/proc`` (a node is more than one process: its shard-lease session runs in a child)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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

