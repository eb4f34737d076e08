"""Start and stop a real ``dw-server`` process for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

_LISTEN = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class ServerProcess:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int = 0, database: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.database = database
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url: str | None = None
        # One log per process started, oldest first: a restart must not hide what the process
        # before it wrote (the crash test checks the killed process's log too).
        self.logs: list[list[str]] = []
        self.lines: list[str] = []  # the current (latest) process's log

    listen_pattern = _LISTEN

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "ops.cli", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.database:
            cmd += ["--database", self.database]
        return cmd

    def start(self, timeout: float = 20.0) -> str:
        lines: list[str] = []
        self.lines = lines
        self.logs.append(lines)
        self.url = None
        self.proc = proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
            cwd=Path(__file__).resolve().parents[2],
        )
        found = threading.Event()

        def pump() -> None:  # this process's output into this process's log
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                m = self.listen_pattern.search(line)
                if m and not found.is_set():
                    self.url = m.group(1)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("dw-server did not start:\n" + self.log())
        assert self.url is not None
        return self.url

    @staticmethod
    def free_port() -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                tail = "\n".join(self.log().splitlines()[-60:])
                raise AssertionError(f"dw-server did not stop within 15 s of SIGTERM; the end of its log:\n{tail}") from None
        return self.proc.returncode if self.proc else 0

    def log(self) -> str:
        """Every process's log, oldest first, each under a header once there was a restart."""
        if len(self.logs) <= 1:
            return "\n".join(self.lines)
        return "\n".join(
            f"--- dw-server process {i} of {len(self.logs)} ---\n" + "\n".join(lines) for i, lines in enumerate(self.logs, 1)
        )


def stop_all(servers: Iterable[ServerProcess]) -> None:
    """Stop every server, even when one of them does not stop; then raise the first failure
    (a loop of ``stop()`` left the others running after the first one failed)."""
    failures: list[BaseException] = []
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - reported after the rest are stopped
            failures.append(exc)
    if failures:
        raise failures[0]
