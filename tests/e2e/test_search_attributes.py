"""Search attributes: registered with types, upserted by workflows, found by list queries."""

from __future__ import annotations

import uuid

import httpx
import pytest
from durable_workflow import Client

from . import workflows as wf
from .harness import run, unique, with_worker

pytestmark = pytest.mark.e2e
CP = {"X-Durable-Workflow-Control-Plane-Version": "2"}


def test_an_upserted_attribute_is_found_by_a_list_query(server_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    stage, priority, tags = f"Stage_{tag}", f"Priority_{tag}", f"Tags_{tag}"
    tq = unique("tq")

    async def body(client: Client) -> tuple:
        await client.create_search_attribute(stage, "keyword")
        await client.create_search_attribute(priority, "int")
        await client.create_search_attribute(tags, "keyword_list")
        listed = await client.list_search_attributes()
        gold = unique("gold")
        h1 = await client.start_workflow(
            workflow_type="tagger", workflow_id=gold, task_queue=tq, input=[{stage: "gold", tags: ["a", "b"]}],
            search_attributes={priority: 5},
        )
        h2 = await client.start_workflow(workflow_type="tagger", workflow_id=unique("silver"), task_queue=tq, input=[{stage: "silver"}], search_attributes={priority: 7})
        await h1.result(timeout=30)
        await h2.result(timeout=30)
        both = await client.list_workflows(query=f'{stage} = "gold" AND {priority} = 5')
        ranged = await client.list_workflows(query=f"{priority} >= 6")
        contains = await client.list_workflows(query=f'{tags} = "b" AND WorkflowType = "tagger"')
        not_gold = await client.list_workflows(query=f'{stage} != "gold" AND {priority} > 0')
        return gold, listed, both, ranged, contains, not_gold

    gold, listed, both, ranged, contains, not_gold = run(with_worker(server_url, tq, wf.ALL_WORKFLOWS, wf.ALL_ACTIVITIES, body))
    assert [w.workflow_id for w in both.executions] == [gold]
    assert both.executions[0].search_attributes[stage] == "gold"
    assert [w.search_attributes[priority] for w in ranged.executions] == [7]
    assert [w.workflow_id for w in contains.executions] == [gold]
    assert [w.search_attributes[stage] for w in not_gold.executions] == ["silver"]
    # The listing, as the SDK parsed it, names the three just registered with their types
    # (other tests on the shared server register their own: only these three are checked).
    assert {name: listed.custom_attributes.get(name) for name in (stage, priority, tags)} == {
        stage: "keyword", priority: "int", tags: "keyword_list",
    }, listed
    assert listed.system_attributes.get("WorkflowType") == "keyword", listed
    with httpx.Client(base_url=server_url, headers=CP) as http:
        attrs = http.get("/api/search-attributes").json()
        assert attrs["custom_attributes"][priority] == "int" and attrs["system_attributes"]["WorkflowType"] == "keyword"


def test_search_attribute_errors(server_url: str) -> None:
    name = f"Level_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server_url, headers=CP) as http:
        assert http.post("/api/search-attributes", json={"name": name, "type": "int"}).status_code == 201
        again = http.post("/api/search-attributes", json={"name": name, "type": "keyword"})
        assert again.status_code == 409 and again.json()["reason"] == "attribute_already_exists" and again.json()["type"] == "int"
        assert http.post("/api/search-attributes", json={"name": "WorkflowType", "type": "keyword"}).json()["reason"] == "name_reserved"
        assert http.post("/api/search-attributes", json={"name": "9lives", "type": "int"}).status_code == 422
        assert http.post("/api/search-attributes", json={"name": "Fine", "type": "money"}).status_code == 422
        assert http.delete("/api/search-attributes/WorkflowId").json()["reason"] == "system_attribute"
        assert http.delete(f"/api/search-attributes/Nope_{name}").status_code == 404

        for query, fragment in (
            (f'{name} = "high"', "does not fit"),
            (f'Unknown_{name} = "x"', "Unknown search attribute"),
            (f"{name} = ", "ends early"),
            (f'{name} = 1 OR {name} = 2', "joined with AND"),
            ('WorkflowType > "a"', "needs an int, double or datetime"),
            ('StartTime > "yesterday"', "does not fit"),
        ):
            r = http.get("/api/workflows", params={"query": query})
            assert r.status_code == 422 and r.json()["reason"] == "invalid_query", (query, r.text)
            assert fragment in r.json()["message"], (query, r.json()["message"])

        bad_token = http.get("/api/workflows", params={"next_page_token": "not-a-token!"})
        assert bad_token.status_code == 400 and bad_token.json()["reason"] == "invalid_page_token"
        assert http.get("/api/workflows", params={"started_after": "last week"}).status_code == 422

        assert http.delete(f"/api/search-attributes/{name}").json()["outcome"] == "deleted"
        gone = http.get("/api/workflows", params={"query": f"{name} = 1"})
        assert gone.status_code == 422 and "Unknown search attribute" in gone.json()["message"]


def test_pages_are_stable_and_bound_to_their_filter(server_url: str) -> None:
    marker = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server_url, headers=CP) as http:
        ids = []
        for i in range(5):
            wid = f"page-{marker}-{i}"
            http.post("/api/workflows", json={"workflow_type": "tagger", "workflow_id": wid, "task_queue": f"idle-{marker}", "input": [{}]})
            ids.append(wid)
        seen, token, pages = [], None, 0
        while True:
            params = {"query": f'WorkflowType = "tagger" AND TaskQueue = "idle-{marker}"', "page_size": 2}
            if token:
                params["next_page_token"] = token
            page = http.get("/api/workflows", params=params).json()
            seen += [w["workflow_id"] for w in page["workflows"]]
            pages += 1
            token = page["next_page_token"]
            if pages == 1:  # a run started between pages does not shift the next page
                http.post("/api/workflows", json={"workflow_type": "tagger", "workflow_id": f"late-{marker}", "task_queue": f"idle-{marker}", "input": [{}]})
                other = http.get("/api/workflows", params={"query": 'WorkflowType = "other"', "next_page_token": token})
                assert other.status_code == 400 and other.json()["reason"] == "page_token_filter_mismatch"
            if not token:
                break
        assert sorted(seen) == sorted(ids) and pages == 3
        for wid in [*ids, f"late-{marker}"]:
            http.post(f"/api/workflows/{wid}/terminate", json={})
