"""History export: the replay bundle the official SDK's verifier accepts and its replayer replays."""

from __future__ import annotations

import json

import httpx
import pytest
from durable_workflow import Client, workflow
from durable_workflow.history_bundle_verify import verify_bundle

from . import workflows as wf
from .harness import await_until, run, unique, with_worker

pytestmark = pytest.mark.e2e


def _approval_run(url: str) -> tuple[str, str, dict, object]:
    tq = unique("tq")

    async def body(client: Client) -> tuple[str, str, dict, object]:
        wid = unique("export")
        handle = await client.start_workflow(workflow_type="approval", workflow_id=wid, task_queue=tq, input=[])

        async def waiting() -> bool:
            return (await client.describe_workflow(wid)).status == "waiting"

        await await_until(waiting, timeout=30, what=f"{wid} waiting for its approval")  # the export shows the wait
        await handle.signal("approve", ["Grace"])
        result = await handle.result(timeout=30)
        bundle = await client.export_history(wid, handle.run_id)
        return wid, handle.run_id, bundle, result

    return run(with_worker(url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))


def test_exported_bundle_verifies_and_replays_to_the_same_result(server_url: str) -> None:
    wid, run_id, bundle, result = _approval_run(server_url)
    report = verify_bundle(bundle)
    assert report["status"] == "ok", report["findings"]
    assert report["integrity"]["checksum_matches"] is True, report["integrity"]
    assert bundle["workflow"]["instance_id"] == wid and bundle["workflow"]["run_id"] == run_id
    assert bundle["history_complete"] is True
    assert bundle["integrity"]["signature"] is None  # no key configured on this server
    assert [s["name"] for s in bundle["signals"]] == ["approve"]

    outcome = workflow.replay(wf.Approval, bundle["history_events"], [], workflow_id=wid, run_id=run_id)
    final = outcome.commands[-1]
    assert type(final).__name__ == "CompleteWorkflow" and final.result == result == "hello, Grace"

    tampered = json.loads(json.dumps(bundle))
    tampered["history_events"][-1]["payload"]["output"] = "forged"
    assert verify_bundle(tampered)["status"] == "failed"


def test_export_of_an_unknown_run_is_404(server_url: str) -> None:
    headers = {"X-Durable-Workflow-Control-Plane-Version": "2"}
    r = httpx.get(f"{server_url}/api/workflows/{unique('none')}/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/history/export", headers=headers)
    assert r.status_code == 404 and r.json()["reason"] in ("instance_not_found", "run_not_found")


def test_signed_bundle_verifies_with_the_key_and_not_without_it(tmp_path) -> None:
    from .server import ServerProcess

    env = {"DW_HISTORY_EXPORT_SIGNING_KEY": "s3cret-export-key", "DW_HISTORY_EXPORT_SIGNING_KEY_ID": "k7"}
    server = ServerProcess(tmp_path / "signed", env=env, port=ServerProcess.free_port())
    server.start()
    try:
        _, _, bundle, _ = _approval_run(server.url)
    finally:
        server.stop()
    assert bundle["integrity"]["signature_algorithm"] == "hmac-sha256" and bundle["integrity"]["key_id"] == "k7"
    good = verify_bundle(bundle, "s3cret-export-key")
    assert good["status"] == "ok" and good["integrity"]["signature_verified"] is True, good
    assert verify_bundle(bundle, "another-key")["status"] == "failed"
