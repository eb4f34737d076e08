"""Routes added to the Quart app without ``Api.endpoint`` skip the pipeline's auth matrix
(tests/e2e/test_auth.py walks only the registry). Each one must refuse a caller without
credentials, or be public on purpose; a new such route fails here until it is classified."""

from __future__ import annotations

import re
from pathlib import Path

import cbor2
from quart import Quart

from api.app import create_app
from runtime.peers import RPC_PATH, Peers

from .node_harness import running_node

TOKENS = {"admin": "admin-secret", "operator": "operator-secret", "worker": "worker-secret"}
OUTSIDE = {
    ("/internal/rpc", "POST"): "refused: node calls are signed with the cluster secret",
    ("/internal/alive", "GET"): "public: the members' liveness probe, an empty 204 that says nothing",
    ("/ui", "GET"): "public: the web UI's static shell; every datum it shows is read from the API under the user's credentials",
    ("/ui/", "GET"): "public: the same shell",
    ("/ui/static/<name>", "GET"): "public: the shell's script and style sheet (a fixed set of files, nothing else)",
    ("/metrics", "GET"): "refused: Prometheus text, operator or admin (the pipeline's auth, public only with DW_METRICS_PUBLIC)",
}


def unregistered(app: Quart, documented: set[str]) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            if (path, method.lower()) not in documented:
                out.add((rule.rule, method))
    return out


async def test_routes_outside_the_registry_refuse_anonymous_callers_or_are_public_on_purpose(tmp_path: Path) -> None:
    async with running_node(tmp_path, auth_driver="token", auth_tokens=TOKENS) as node:
        app = create_app(node)
        client = app.test_client()
        document = await (await client.get("/api/openapi.json")).get_json()
        documented = {(path, method) for path, item in document["paths"].items() for method in item}
        assert unregistered(app, documented) == set(OUTSIDE)

        anonymous = await client.get("/api/workflows")  # the matrix's answer, for contrast
        assert anonymous.status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        shell = await client.get("/ui")
        assert shell.status_code == 200 and "script-src 'self'" in shell.headers["Content-Security-Policy"]
        assert (await client.get("/ui/static/app.js")).status_code == 200
        for name in ("../app.py", "index.html", "..%2Fui_routes.py", "app.js.map"):
            assert (await client.get(f"/ui/static/{name}")).status_code == 404, name
        assert (await client.get("/metrics", headers={"Authorization": "Bearer worker-secret"})).status_code == 403
        assert (await client.get("/metrics", headers={"Authorization": "Bearer operator-secret"})).status_code == 200
        assert (await client.get("/internal/alive")).status_code == 204
        assert await (await client.get("/internal/alive")).get_data() == b""
        for name in ("app.py", "__init__.py", "../runtime/config.py"):  # no static route at all (not just no file)
            assert (await client.get(f"/static/{name}")).status_code == 404
        assert not any(rule.rule.startswith("/static") for rule in app.url_map.iter_rules())
        call = cbor2.dumps({"op": "terminal_info", "run_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
        not_member = await client.post(RPC_PATH, data=call, headers={"Authorization": "Bearer admin-secret"})
        assert not_member.status_code == 404  # an embedded node takes no node calls at all, tokens or not

        node.engine.peers = receiver = Peers("in-process", b"cluster-secret", node.clock)
        sender = Peers("other", b"cluster-secret", node.clock)
        stranger = Peers("other", b"not-the-secret", node.clock)
        try:
            length = {"Content-Length": str(len(call))}  # the test client does not set it; node calls must
            sender.audiences["http://me"] = stranger.audiences["http://me"] = receiver.me
            for headers in (
                {},
                {"Authorization": "Bearer admin-secret"},  # an API credential is no node credential
                stranger.signed_headers("POST", RPC_PATH, call, "http://me"),
            ):
                refused = await client.post(RPC_PATH, data=call, headers={**headers, **length})
                assert refused.status_code == 401, headers
            signed = sender.signed_headers("POST", RPC_PATH, call, "http://me")
            accepted = await client.post(RPC_PATH, data=call, headers={**signed, **length})
            assert accepted.status_code == 200, await accepted.get_data()
            assert cbor2.loads(await accepted.get_data()) == {"info": None}
        finally:
            node.engine.peers = None
            for peers in (receiver, sender, stranger):
                await peers.http.aclose()
                await peers.probe_http.aclose()
