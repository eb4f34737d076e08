"""External payload storage through the official SDK (extended spec §13): the namespace policy
set and read with ``Client.set_namespace_external_storage``, the server's probe of a local
directory and of an S3-compatible store (moto's S3 server on loopback), and payloads above the
client's threshold travelling as references the server keeps verbatim; on both journals."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from durable_workflow import Client, Worker, activity, workflow
from durable_workflow.errors import InvalidArgument
from durable_workflow.external_storage import LocalFilesystemExternalStorage
from moto.server import ThreadedMotoServer

from .harness import current_history, unique
from .server import ServerProcess
from .stores import BACKENDS, store

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@activity.defn(name="es_echo_size")
async def es_echo_size(text: str) -> str:
    return f"{len(text)}:" + text[::-1]


@workflow.defn(name="es_big")
class Big:
    def run(self, ctx, text):  # type: ignore[no-untyped-def]
        return (yield ctx.schedule_activity("es_echo_size", [text]))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=ServerProcess.free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in AWS}
    os.environ.update(AWS)
    try:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="dw-payloads")
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_policy_and_the_probe_of_a_local_directory_and_an_s3_bucket(tmp_path: Path, s3_endpoint: str, backend: str) -> None:
    with store(backend) as database:
        server = ServerProcess(tmp_path / "data", port=ServerProcess.free_port(), env=AWS, database=database)
        _probe_scenario(server, server.start(), tmp_path, s3_endpoint)


def _probe_scenario(server: ServerProcess, url: str, tmp_path: Path, s3_endpoint: str) -> None:

    async def scenario() -> tuple:
        async with Client(url) as client:
            with pytest.raises(InvalidArgument) as unset:
                await client.test_external_storage()
            local = await client.set_namespace_external_storage("default", driver="local", threshold_bytes=4096,
                                                                config={"uri": (tmp_path / "payloads").as_uri()})
            local_probe = await client.test_external_storage(small_payload_bytes=100, large_payload_bytes=200_000)
            s3 = await client.set_namespace_external_storage("default", driver="s3", threshold_bytes=1024,
                                                             config={"bucket": "dw-payloads", "prefix": "ns/default",
                                                                     "endpoint": s3_endpoint, "region": "us-east-1"})
            s3_probe = await client.test_external_storage(driver="s3")
            await client.set_namespace_external_storage("default", driver="s3", config={"bucket": "no-such-bucket",
                                                                                       "endpoint": s3_endpoint})
            with pytest.raises(InvalidArgument) as missing:
                await client.test_external_storage()
            described = await client.describe_namespace("default")
            return unset.value, local, local_probe, s3, s3_probe, missing.value, described

    try:
        unset, local, local_probe, s3, s3_probe, missing, described = asyncio.run(scenario())
    finally:
        server.stop()
    assert "has no external storage policy" in str(unset)
    assert local.external_payload_storage.driver == "local" and local.external_payload_storage.threshold_bytes == 4096
    assert local_probe.status == "passed"
    assert s3.external_payload_storage.config["bucket"] == "dw-payloads"
    assert s3_probe.status == "passed"
    objects = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(Bucket="dw-payloads")
    assert objects.get("KeyCount", 0) == 0, "the probe deletes what it wrote"
    assert "could not be written and read back" in str(missing) and "NoSuchBucket" in str(missing)
    assert described.external_payload_storage.config["bucket"] == "no-such-bucket"
    assert "Traceback" not in server.log()


def test_payloads_above_the_threshold_travel_as_references_the_server_keeps_verbatim(server_url: str, tmp_path: Path) -> None:
    tq, wid = unique("es"), unique("es-big")
    text = "x" * 5000 + "y"
    root = tmp_path / "sdk-payloads"

    async def scenario() -> tuple:
        storage = LocalFilesystemExternalStorage(root)
        async with Client(server_url, external_storage=storage, external_storage_threshold_bytes=1024) as client, \
                httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as http:
            worker = Worker(client, task_queue=tq, workflows=[Big], activities=[es_echo_size], poll_timeout=2)
            task = asyncio.create_task(worker.run())
            try:
                handle = await client.start_workflow(workflow_type="es_big", workflow_id=wid, task_queue=tq, input=[text])
                result = await handle.result(timeout=60)
            finally:
                await worker.stop()
                await task
            return result, await current_history(http, wid), (await http.get(f"/api/workflows/{wid}")).json()

    result, events, described = asyncio.run(scenario())
    assert result == f"{len(text)}:" + text[::-1]
    started = next(e for e in events if e["event_type"] == "WorkflowStarted")["payload"]["input"]
    completed = next(e for e in events if e["event_type"] == "WorkflowCompleted")["payload"]["output"]
    for ref in (started, completed):
        stored = ref["external_storage"] if isinstance(ref, dict) and "external_storage" in ref else ref
        assert stored["schema"] == "durable-workflow.v2.external-payload-reference.v1" and stored["uri"].startswith("file://"), ref
    assert described["input_envelope"]["external_storage"]["sha256"] == started["external_storage"]["sha256"]
    assert len(list(root.rglob("*"))) >= 2, "the bytes live in the SDK's storage, not in the history"


def test_without_a_driver_of_its_own_the_sdk_hands_large_payloads_to_the_server(server_url: str, tmp_path: Path) -> None:
    """The runtime transport (extended §13.4): a namespace whose policy the server can write
    publishes it; the SDK uploads every payload over the threshold and fetches the references
    it receives, so history holds references and the bytes live in the namespace's storage."""
    tq, wid, ns = unique("es-rt"), unique("es-rt"), unique("es-ns")
    text = "z" * 6000 + "!"

    async def scenario() -> tuple:
        async with httpx.AsyncClient(base_url=server_url, headers=CP, timeout=30) as admin:
            assert (await admin.post("/api/namespaces", json={"name": ns})).status_code == 201
            r = await admin.put(f"/api/namespaces/{ns}/external-storage",
                                json={"driver": "local", "threshold_bytes": 2048, "config": {"uri": (tmp_path / "rt").as_uri()}})
            assert r.status_code == 200, r.text
        async with Client(server_url, namespace=ns) as client, \
                httpx.AsyncClient(base_url=server_url, headers={**CP, "X-Namespace": ns}, timeout=30) as http:
            worker = Worker(client, task_queue=tq, workflows=[Big], activities=[es_echo_size], poll_timeout=2)
            task = asyncio.create_task(worker.run())
            try:
                handle = await client.start_workflow(workflow_type="es_big", workflow_id=wid, task_queue=tq, input=[text])
                result = await handle.result(timeout=60)
            finally:
                await worker.stop()
                await task
            return result, await current_history(http, wid)

    result, events = asyncio.run(scenario())
    assert result == f"{len(text)}:" + text[::-1]
    started = next(e for e in events if e["event_type"] == "WorkflowStarted")["payload"]["input"]
    scheduled_result = next(e for e in events if e["event_type"] == "ActivityCompleted")["payload"]["result"]
    for ref in (started, scheduled_result):
        assert isinstance(ref, dict) and ref["external_payload"]["reference_id"].startswith("ep_"), ref
    assert len(list((tmp_path / "rt" / "runtime").iterdir())) >= 2, "the server stored the bytes in the namespace's storage"
