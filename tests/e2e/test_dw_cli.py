"""The ``dw`` command line against a real server, with an SDK worker doing the work.

start → signal → history → result, in tables and with ``--output json`` (parsed), plus the
exit codes scripts rely on and credentials from the environment or a config file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import unique, worker_thread
from .server import ServerProcess
from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def dw(url: str | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ops.dw.main", *(["--server", url] if url else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200", "HOME": str(ROOT / ".no-home"), **(env or {})})


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_start_signal_history_result_in_tables_and_json(sqlite_url: str) -> None:
    tq, wid = unique("cli"), unique("cli-wf")
    with worker_thread(sqlite_url, tq, ALL_WORKFLOWS, ALL_ACTIVITIES):
        started = json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "start", "--type", "approval", "--id", wid,
                                   "--task-queue", tq)))
        assert started["workflow_id"] == wid and started["run_id"]
        table = ok(dw(sqlite_url, "workflow", "describe", wid))
        assert wid in table and "approval" in table
        ok(dw(sqlite_url, "workflow", "signal", wid, "approve", "--input", '["ops"]'))
        assert json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "result", wid, "--timeout", "60")))["output"] == "hello, ops"
        assert ok(dw(sqlite_url, "workflow", "result", wid)).strip() == '"hello, ops"'
        history = json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "history", wid)))
        kinds = [e["event_type"] for e in history["events"]]
        assert kinds[-1] == "WorkflowCompleted" and "SignalReceived" in kinds
        followed = ok(dw(sqlite_url, "workflow", "history", wid, "--follow"))
        assert "SignalReceived" in followed and "WorkflowCompleted" in followed, followed
        listed = json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "list", "--all", "--page-size", "5")))
        assert wid in {w["workflow_id"] for w in listed["workflows"]}
        queues = ok(dw(sqlite_url, "task-queue", "list"))
        assert tq in queues
        assert "default" in ok(dw(sqlite_url, "namespace", "list"))
        assert json.loads(ok(dw(sqlite_url, "-o", "json", "cluster", "status")))["server_id"]


def test_exit_codes_scripts_rely_on(sqlite_url: str, tmp_path: Path) -> None:
    missing = dw(sqlite_url, "workflow", "describe", unique("ghost"))
    assert missing.returncode == 3 and "instance_not_found" in missing.stderr, missing
    refused = dw(sqlite_url, "workflow", "start", "--type", "x", "--input", "{not json")
    assert refused.returncode == 2 and "not JSON" in refused.stderr, refused
    unreachable = dw(f"http://127.0.0.1:{ServerProcess.free_port()}", "workflow", "list")
    assert unreachable.returncode == 5 and "cannot reach" in unreachable.stderr, unreachable
    bad_output = dw(sqlite_url, "-o", "yaml", "workflow", "list")
    assert bad_output.returncode == 2, bad_output


def test_credentials_from_the_environment_and_a_config_file(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"DW_AUTH_DRIVER": "token", "DW_OPERATOR_TOKEN": "op-token"},
                           port=ServerProcess.free_port())
    url = server.start()
    try:
        assert dw(url, "namespace", "list").returncode == 4, "no credentials: not allowed"
        ok(dw(url, "namespace", "list", env={"DW_TOKEN": "op-token"}))
        config = tmp_path / "dw.toml"
        config.write_text(f'server = "http://127.0.0.1:1"\n[profiles.local]\nserver = "{url}"\ntoken = "op-token"\n')
        assert "default" in ok(dw(None, "--config", str(config), "--profile", "local", "namespace", "list"))
        assert dw(None, "--config", str(config), "--profile", "nope", "namespace", "list").returncode == 2
    finally:
        server.stop()


def test_requests_signed_with_a_signature_key(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"DW_AUTH_DRIVER": "signature", "DW_OPERATOR_SIGNATURE_KEY": "op-key"},
                           port=ServerProcess.free_port())
    url = server.start()
    try:
        assert dw(url, "namespace", "list").returncode == 4
        assert dw(url, "--signature-key", "not-the-key", "namespace", "list").returncode == 4
        assert "default" in ok(dw(url, "--signature-key", "op-key", "namespace", "list"))
        started = json.loads(ok(dw(url, "-o", "json", "workflow", "start", "--type", "t", "--id", "signed-1", "--input", '["x"]',
                                   env={"DW_SIGNATURE_KEY": "op-key"})))
        assert started["workflow_id"] == "signed-1", "a signed POST with a body"
        assert json.loads(ok(dw(url, "-o", "json", "workflow", "list", "--query", 'WorkflowId = "signed-1"',
                                env={"DW_SIGNATURE_KEY": "op-key"})))["workflows"][0]["workflow_id"] == "signed-1"
    finally:
        server.stop()


def test_operator_commands_standalone_activities_runs_and_build_ids(sqlite_url: str) -> None:
    tq, job = unique("cli-ops"), unique("cli-job")
    with worker_thread(sqlite_url, tq, ALL_WORKFLOWS, ALL_ACTIVITIES):
        started = json.loads(ok(dw(sqlite_url, "-o", "json", "activity", "start", "--type", "greet", "--task-queue", tq,
                                   "--id", job, "--input", '["ops"]', "--start-to-close-timeout", "30")))
        assert started["activity_id"] == job
        assert ok(dw(sqlite_url, "activity", "result", job, "--timeout", "60")).strip() == '"hello, ops"'
        described = json.loads(ok(dw(sqlite_url, "-o", "json", "activity", "describe", job)))
        assert described["status"] == "completed" and described["attempt_count"] == 1
        assert job in {a["activity_id"] for a in json.loads(ok(dw(sqlite_url, "-o", "json", "activity", "list", "--all")))["activities"]}
        assert job in ok(dw(sqlite_url, "activity", "list", "--status", "completed"))
        builds = json.loads(ok(dw(sqlite_url, "-o", "json", "task-queue", "build-ids", tq)))
        assert [b["build_id"] for b in builds["build_ids"]] == [None], "the SDK worker registered no build id"
        drained = json.loads(ok(dw(sqlite_url, "-o", "json", "task-queue", "drain-build", tq)))
        assert drained["drain_intent"] == "draining", drained
        ok(dw(sqlite_url, "task-queue", "resume-build", tq))
        assert json.loads(ok(dw(sqlite_url, "-o", "json", "task-queue", "build-ids", tq)))["build_ids"][0]["drain_intent"] == "active"
    idle = unique("cli-idle")
    wid = json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "start", "--type", "approval", "--task-queue", idle)))["workflow_id"]
    assert json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "repair", wid)))["outcome"] in ("repair_dispatched", "repair_not_needed")
    asked = json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "request-cancellation", wid, "--reason", "cli")))
    assert asked["outcome"] == "cancellation_requested" and asked["cancellation_request"]["request_id"], asked
    events = json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "history", wid)))["events"]
    assert [e["payload"].get("reason") for e in events if e["event_type"] == "CooperativeCancellationRequested"] == ["cli"]
    debug = json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "debug", wid)))
    assert debug["run_id"] and "diagnostic_status" in debug
    assert "findings" in ok(dw(sqlite_url, "workflow", "debug", wid)), "the table form renders too"
    refused = dw(sqlite_url, "workflow", "archive", wid)
    assert refused.returncode == 1 and "run_not_closed" in refused.stderr, refused
    not_failed = dw(sqlite_url, "workflow", "redrive", wid)
    assert not_failed.returncode == 1 and "run_not_redrivable" in not_failed.stderr, not_failed
    ok(dw(sqlite_url, "workflow", "terminate", wid))
    assert json.loads(ok(dw(sqlite_url, "-o", "json", "workflow", "archive", wid, "--reason", "done")))["outcome"] == "archived"
    missing = dw(sqlite_url, "activity", "describe", unique("ghost"))
    assert missing.returncode == 3, missing
