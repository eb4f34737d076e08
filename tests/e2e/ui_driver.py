"""The browser side of the web UI test, run as a process of its own: Playwright's sync API
drives an asyncio loop in the calling thread, which must not meet the trio-asyncio loop policy
the rest of the suite installs (nor leave a loop behind for the tests after it).

``python -m tests.e2e.ui_driver <scenario> <json arguments>``: exit 0 when every step held,
else the failed step on stderr and exit 1.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def walkthrough(page: Any, a: dict[str, Any]) -> None:
    """List, filter, open a workflow, see its timeline, signal it and see the signal arrive."""
    url, wid, other, tq = a["url"], a["wid"], a["other"], a["tq"]
    errors: list[str] = []
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
    Path(a["screenshot"]).parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=a["screenshot"], full_page=True)
    for section, selector in (("task-queues", f'#task-queues td:text("{tq}")'), ("cluster", "#nodes tbody tr"),
                              ("schedules", "#schedules")):
        page.click(f'[data-nav="{section}"]')
        page.wait_for_selector(selector)
    assert not errors, errors


def credentials(page: Any, a: dict[str, Any]) -> None:
    """A server that wants credentials: the UI says so, then works with the user's token."""
    page.goto(f"{a['url']}/ui")
    expect(page.locator("#flash")).to_contain_text("credentials")
    page.context.add_init_script(f"sessionStorage.setItem('dw-token', {json.dumps(a['token'])})")  # what the Token button stores
    page.reload()
    page.wait_for_selector("#workflows")
    expect(page.locator("#flash")).to_have_text("")


SCENARIOS = {"walkthrough": walkthrough, "credentials": credentials}


def main(argv: list[str]) -> int:
    scenario, args = SCENARIOS[argv[0]], json.loads(argv[1])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            scenario(browser.new_page(viewport={"width": 1280, "height": 900}), args)
        finally:
            browser.close()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
