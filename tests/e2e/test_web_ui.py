"""The built-in web UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright
with that system browser; nothing downloads a browser).

Open the list, filter it, open a workflow, see its timeline, send a signal and see it appear
(the timeline follows the history long poll), with a screenshot saved as a test artifact; and
a server that wants credentials gets them from the user's token, never from the page. The
browser runs in a process of its own (``ui_driver``): Playwright's sync API must not share the
test process's asyncio loop policy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.postgres_required import postgres_required

from .harness import unique, worker_thread
from .server import ServerProcess
from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DW_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))


def drive(scenario: str, **args: str) -> None:
    if not Path(shutil.which("chromium") or "/usr/bin/chromium").exists():
        # The PostgreSQL rule: skipped on a machine without the browser, a failure in CI.
        message = "Debian's chromium package is needed for the browser tests (.ci/run installs it: apt-get install chromium)"
        if postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run([sys.executable, "-m", "tests.e2e.ui_driver", scenario, json.dumps(args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-4000:]


def test_list_filter_open_timeline_signal_and_see_it_appear(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port())
    url = server.start()
    tq, wid, other = unique("ui"), unique("ui-approval"), unique("ui-other")
    try:
        with worker_thread(url, tq, ALL_WORKFLOWS, ALL_ACTIVITIES):
            for workflow_id in (wid, other):
                r = httpx.post(f"{url}/api/workflows", headers=CP,
                               json={"workflow_type": "approval", "workflow_id": workflow_id, "task_queue": tq})
                assert r.status_code == 201, r.text
            screenshot = ARTIFACTS / "ui-workflow.png"
            drive("walkthrough", url=url, wid=wid, other=other, tq=tq, screenshot=str(screenshot))
            assert screenshot.stat().st_size > 10_000
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


def test_a_server_that_wants_credentials_gets_the_users_token(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"DW_AUTH_DRIVER": "token", "DW_OPERATOR_TOKEN": "op-token"},
                           port=ServerProcess.free_port())
    url = server.start()
    try:
        drive("credentials", url=url, token="op-token")
    finally:
        server.stop()
