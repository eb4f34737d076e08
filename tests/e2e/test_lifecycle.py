"""End-to-end: the server process's lifecycle — start-up checks, bootstrap, shutdown, restart.

Every test starts its own ``dw-server`` processes on its own data directory (never the
shared session server), talks only to 127.0.0.1, bounds every wait, and kills whatever
it started when it ends.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .harness import wait_until
from .server import ServerProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
WP = {"X-Durable-Workflow-Protocol-Version": "1.20"}
_LISTEN_ANY = re.compile(r"listening on (http://[^\s,]+)")
# Variables of the outer environment that would change what these tests check.
_SCRUB = ("WORKFLOW_SERVER_AUTH_DRIVER",)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DW_") and k not in _SCRUB}
    env.update(extra or {})
    return env


class Server(ServerProcess):
    """A ``ServerProcess`` with extra ``serve`` flags, a scrubbed environment and any bind address."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, port: int = 0, args: Sequence[str] = ()
    ) -> None:
        super().__init__(data_dir, port=port)
        self.env = clean_env(env)
        self.args = list(args)

    listen_pattern = _LISTEN_ANY

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "ops.cli", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
            *self.args,
        ]

    def signal_and_wait(self, signum: int, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            name = signal.Signals(signum).name
            raise AssertionError(f"dw-server did not exit within {timeout}s of {name}:\n{self.log()}") from None

    def wait_for_line(self, needle: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line with {needle!r}:\n{self.log()}")


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts; whatever is still running at the end is killed."""
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def new_server(servers: list[Server], data_dir: Path, **kw: object) -> Server:
    server = Server(data_dir, **kw)  # type: ignore[arg-type]
    servers.append(server)
    return server


def run_cli(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ops.cli ARGS`` to completion (bounded) and return its output."""
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args], cwd=REPO, env=clean_env(env), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False,
    )


def register(http: httpx.Client, worker_id: str, queue: str) -> None:
    r = http.post("/api/worker/register", headers=WP,
                  json={"worker_id": worker_id, "task_queue": queue, "runtime": "python"})
    assert r.status_code == 201, r.text


def poll(http: httpx.Client, worker_id: str, queue: str, timeout_seconds: float) -> httpx.Response:
    return http.post("/api/worker/workflow-tasks/poll", headers=WP,
                     json={"worker_id": worker_id, "task_queue": queue, "timeout_seconds": timeout_seconds})


def seen_at(http: httpx.Client, worker_id: str) -> str:
    """When the server last heard from the worker (registration, heartbeat or poll)."""
    r = http.get(f"/api/workers/{worker_id}", headers=CP)
    assert r.status_code == 200, r.text
    return r.json()["last_heartbeat_at"]


def assert_clean(server: Server, code: int) -> None:
    assert code == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
    assert any("dw-server stopped" in line for line in server.lines), server.log()


# --- shutdown --------------------------------------------------------------------------


def test_sigterm_answers_a_parked_long_poll_promptly_and_exits_zero(tmp_path: Path, servers: list[Server]) -> None:
    server = new_server(servers, tmp_path / "data")
    url = server.start()
    with httpx.Client(base_url=url, timeout=45) as http:
        register(http, "w-parked", "q-parked")
        registered = seen_at(http, "w-parked")
        with ThreadPoolExecutor(1) as pool:
            parked = pool.submit(poll, http, "w-parked", "q-parked", 30)
            # A poll records the worker as seen, then parks with nothing between: once the
            # worker's heartbeat time moves past its registration, the poll is parked.
            wait_until(lambda: seen_at(http, "w-parked") != registered, timeout=20, what="the poll reached the server")
            assert not parked.done(), parked.result()
            sent = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            r = parked.result(timeout=40)
            answered = time.monotonic() - sent
    # Unanswered by the shutdown, the poll would end only with its 30 s hold (or not at all, the
    # connection dropped). 15 s is half the hold: the margin for a loaded two-core machine.
    assert answered < 15.0, f"parked poll answered {answered:.1f}s after SIGTERM"
    assert r.status_code == 200, r.text
    assert r.json()["task"] is None, r.text
    try:
        code = server.proc.wait(15)  # type: ignore[union-attr]
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError("dw-server did not exit after SIGTERM:\n" + server.log()) from None
    assert_clean(server, code)
    assert any("received SIGTERM" in line for line in server.lines), server.log()


def test_sigint_shuts_down_cleanly(tmp_path: Path, servers: list[Server]) -> None:
    server = new_server(servers, tmp_path / "data")
    url = server.start()
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/api/namespaces", headers=CP).status_code == 200
    code = server.signal_and_wait(signal.SIGINT)
    assert_clean(server, code)
    assert any("received SIGINT" in line for line in server.lines), server.log()


# --- bootstrap -------------------------------------------------------------------------


def test_bootstrap_creates_schema_and_default_namespace(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    done = run_cli(["bootstrap", "--data-dir", str(data)])
    assert done.returncode == 0, done.stdout
    assert "Traceback" not in done.stdout, done.stdout
    db = data / "journal.sqlite3"
    assert db.exists(), done.stdout
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        namespaces = [r[0] for r in conn.execute("SELECT name FROM namespaces")]
    assert {"schema_version", "records", "runs", "instances", "namespaces", "workers"} <= tables, tables
    assert namespaces == ["default"]

    # Bootstrapping again is harmless.
    again = run_cli(["bootstrap", "--data-dir", str(data)])
    assert again.returncode == 0, again.stdout

    server = new_server(servers, data)
    url = server.start()
    with httpx.Client(base_url=url, timeout=10) as http:
        r = http.get("/api/namespaces", headers=CP)
    assert r.status_code == 200, r.text
    assert [ns["name"] for ns in r.json()["namespaces"]] == ["default"], r.text
    assert not any("created the" in line for line in server.lines), "the server re-created the namespace:\n" + server.log()
    assert_clean(server, server.signal_and_wait(signal.SIGTERM))


# --- start-up checks -------------------------------------------------------------------


def test_non_loopback_bind_without_auth_is_refused(tmp_path: Path) -> None:
    refused = run_cli(["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path / "data")])
    assert refused.returncode != 0, refused.stdout
    assert "listening on" not in refused.stdout, refused.stdout
    assert re.search(r"refusing to serve 0\.0\.0\.0 without authentication.*--insecure", refused.stdout), refused.stdout
    assert "Traceback" not in refused.stdout, refused.stdout


def test_non_loopback_bind_without_auth_starts_with_insecure(tmp_path: Path, servers: list[Server]) -> None:
    # Port 0 and an immediate stop: the wildcard bind lives only for a moment, and no
    # request is sent to it.
    server = new_server(servers, tmp_path / "data", args=["--host", "0.0.0.0", "--insecure"])
    url = server.start()
    assert url.startswith("http://0.0.0.0:"), url
    assert_clean(server, server.signal_and_wait(signal.SIGTERM))


def test_token_driver_without_a_token_is_refused(tmp_path: Path) -> None:
    refused = run_cli(["serve", "--port", "0", "--data-dir", str(tmp_path / "data")], env={"DW_AUTH_DRIVER": "token"})
    assert refused.returncode != 0, refused.stdout
    assert "listening on" not in refused.stdout, refused.stdout
    assert "auth driver 'token' needs DW_AUTH_TOKEN" in refused.stdout, refused.stdout
    assert "Traceback" not in refused.stdout, refused.stdout


def test_token_driver_requires_the_bearer_token(tmp_path: Path, servers: list[Server]) -> None:
    server = new_server(servers, tmp_path / "data", env={"DW_AUTH_DRIVER": "token", "DW_AUTH_TOKEN": "secret"})
    url = server.start()
    with httpx.Client(base_url=url, timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
            r = http.get("/api/namespaces", headers={**CP, **headers})
            assert r.status_code == 401, (headers, r.text)
            assert r.json()["reason"] == "unauthorized", r.text
        r = http.get("/api/namespaces", headers={**CP, "Authorization": "Bearer secret"})
        assert r.status_code == 200, r.text
        assert "default" in [ns["name"] for ns in r.json()["namespaces"]]
    line = server.wait_for_line("listening on")
    assert "auth driver token" in line, line
    assert_clean(server, server.signal_and_wait(signal.SIGTERM))


def test_startup_log_names_listen_url_store_and_auth_driver(tmp_path: Path, servers: list[Server]) -> None:
    port = ServerProcess.free_port()
    data = tmp_path / "data"
    server = new_server(servers, data, port=port)
    url = server.start()
    assert url == f"http://127.0.0.1:{port}"
    line = server.wait_for_line("listening on")
    assert f"http://127.0.0.1:{port}" in line, line
    assert f"sqlite:{data / 'journal.sqlite3'}" in line, line
    assert "auth driver none" in line, line
    assert_clean(server, server.signal_and_wait(signal.SIGTERM))


# --- restart ---------------------------------------------------------------------------


def test_worker_registration_survives_a_restart(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    first = new_server(servers, data)
    with httpx.Client(base_url=first.start(), timeout=10) as http:
        r = poll(http, "w1", "q", 0)
        assert r.status_code == 412, r.text  # the control: unregistered workers are refused
        register(http, "w1", "q")
        assert poll(http, "w1", "q", 0).status_code == 200
    assert_clean(first, first.signal_and_wait(signal.SIGTERM))

    second = new_server(servers, data)
    with httpx.Client(base_url=second.start(), timeout=10) as http:
        r = poll(http, "w1", "q", 0)
        assert r.status_code == 200, r.text
        assert r.json()["task"] is None, r.text
        other = poll(http, "w1", "other-q", 0)
        assert other.status_code == 409, other.text  # the registration kept its task queue
    assert_clean(second, second.signal_and_wait(signal.SIGTERM))
