"""The built-in web UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright
with that system browser; nothing downloads a browser).

Open the list, filter it, open a workflow, see its timeline, send a signal and see it appear
(the timeline follows the history long poll), with a screenshot saved as a test artifact; and
a server that wants credentials gets them from the user's token, never from the page.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from durable_workflow import Client, Worker
from playwright.sync_api import expect

from tests.postgres_required import postgres_required

from .harness import unique
from .server import ServerProcess
from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("DW_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


@pytest.fixture()
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        # The PostgreSQL rule: skipped on a machine without the browser, a failure in CI.
        message = "Debian's chromium package is needed for the browser tests (.ci/run installs it: apt-get install chromium)"
        if postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _worker(url: str, tq: str, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        async def main() -> None:
            async with Client(url) as client:
                w = Worker(client, task_queue=tq, workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES, poll_timeout=2)
                task = asyncio.create_task(w.run())
                while not stop.is_set():
                    await asyncio.sleep(0.1)
                await w.stop()
                await task

        asyncio.run(main())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_list_filter_open_timeline_signal_and_see_it_appear(tmp_path: Path, browser) -> None:  # type: ignore[no-untyped-def]
    server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port())
    url = server.start()
    tq, wid, other = unique("ui"), unique("ui-approval"), unique("ui-other")
    stop = threading.Event()
    thread = _worker(url, tq, stop)
    errors: list[str] = []
    try:
        for workflow_id, kind in ((wid, "approval"), (other, "approval")):
            r = httpx.post(f"{url}/api/workflows", headers=CP, json={"workflow_type": kind, "workflow_id": workflow_id, "task_queue": tq})
            assert r.status_code == 201, r.text
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/ui")
        page.wait_for_selector(f'#workflows tr[data-workflow="{wid}"]')
        assert page.locator(f'#workflows tr[data-workflow="{other}"]').count() == 1
        page.fill("#filter", f'WorkflowId = "{wid}"')
        page.click("#apply")
        expect(page.locator("#workflows tbody tr")).to_have_count(1)  # the page's CSP forbids eval: locators, not functions
        assert page.locator("#workflows tbody tr").first.get_attribute("data-workflow") == wid
        page.click(f'#workflows a:text("{wid}")')
        page.wait_for_selector('#timeline li[data-event="ConditionWaitOpened"]')
        assert page.locator('#facts dd[data-field="workflow_type"]').inner_text() == "approval"
        page.fill("#signal-name", "approve")
        page.fill("#signal-input", '["from the ui"]')
        page.click("#send-signal")
        page.wait_for_selector('#timeline li[data-event="SignalReceived"]', timeout=15_000)  # the long poll brought it
        page.wait_for_selector('#timeline li[data-event="WorkflowCompleted"]', timeout=30_000)
        expect(page.locator('#facts dd[data-field="status"]')).to_have_text("completed")
        assert "hello, from the ui" in page.locator('#facts dd[data-field="output"]').inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-workflow.png"), full_page=True)
        for section, selector in (("task-queues", f'#task-queues td:text("{tq}")'), ("cluster", "#nodes tbody tr"),
                                  ("schedules", "#schedules")):
            page.click(f'[data-nav="{section}"]')
            page.wait_for_selector(selector)
        assert not errors, errors
    finally:
        stop.set()
        thread.join(30)
        server.stop()
    assert "Traceback" not in server.log(), server.log()


def test_a_server_that_wants_credentials_gets_the_users_token(tmp_path: Path, browser) -> None:  # type: ignore[no-untyped-def]
    server = ServerProcess(tmp_path / "data", env={"DW_AUTH_DRIVER": "token", "DW_OPERATOR_TOKEN": "op-token"},
                           port=ServerProcess.free_port())
    url = server.start()
    try:
        page = browser.new_page()
        page.goto(f"{url}/ui")
        expect(page.locator("#flash")).to_contain_text("credentials")
        page.context.add_init_script("sessionStorage.setItem('dw-token', 'op-token')")  # what the Token button stores
        page.reload()
        page.wait_for_selector("#workflows")
        expect(page.locator("#flash")).to_have_text("")
    finally:
        server.stop()
