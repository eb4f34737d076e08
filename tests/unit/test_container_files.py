"""The container files (ops/container, ops/k8s) parse, run commands the server's own command
line accepts (the grammar the test suite's servers start through), name only settings the
server reads, and probe routes that exist."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from ops.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
CONTAINER, K8S = ROOT / "ops" / "container", ROOT / "ops" / "k8s"
CONFIG_SOURCE = (ROOT / "runtime" / "config.py").read_text() + (ROOT / "runtime" / "node.py").read_text() + (
    ROOT / "ops" / "cli.py").read_text()


def _dockerfile() -> dict[str, list[str]]:
    out = {}
    for line in (CONTAINER / "Dockerfile").read_text().splitlines():
        m = re.match(r"^(ENTRYPOINT|CMD) (\[.*\])$", line)
        if m:
            out[m.group(1)] = json.loads(m.group(2))
    return out


def _accepted(args: list[str]) -> None:
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:  # argparse's refusal
        pytest.fail(f"dw-server refuses {args}: exit {exc.code}")


def test_the_image_runs_dw_server_serve_and_checks_readiness() -> None:
    docker = _dockerfile()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert docker["ENTRYPOINT"] == ["dw-server"] and scripts["dw-server"] == "ops.cli:main"
    assert docker["CMD"][0] == "serve"
    _accepted(docker["CMD"])
    text = (CONTAINER / "Dockerfile").read_text()
    assert "USER dw" in text and "FROM python:3.11-slim" in text
    assert "/api/ready" in text.split("HEALTHCHECK", 1)[1]


def test_compose_bootstraps_then_starts_two_nodes_on_postgresql() -> None:
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "bootstrap", "node1", "node2"} <= set(services)
    assert services["bootstrap"]["command"][0] == "bootstrap"
    _accepted(services["bootstrap"]["command"])
    for name in ("node1", "node2"):
        node = services[name]
        assert node["command"][0] == "serve"
        _accepted(node["command"])
        assert node["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
        for key in node["environment"]:
            assert key in CONFIG_SOURCE, f"{key} is not a setting the server reads"
    assert {services["node1"]["command"][services["node1"]["command"].index("--node-id") + 1],
            services["node2"]["command"][services["node2"]["command"].index("--node-id") + 1]} == {"node-1", "node-2"}


def test_kubernetes_manifests_parse_and_probe_routes_that_exist() -> None:
    documents = [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]
    kinds = {doc["kind"]: doc for doc in documents}
    assert set(kinds) == {"Job", "Deployment", "Service"}
    job = kinds["Job"]["spec"]["template"]["spec"]["containers"][0]
    _accepted(job["args"])
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    _accepted(container["args"])
    for env in container["env"]:
        assert env["name"].startswith("POD_") or env["name"] in CONFIG_SOURCE, env["name"]
    routes = (ROOT / "api" / "control_routes.py").read_text()
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert f'"{path}"' in routes, f"{probe} asks {path}, which the server does not serve"
    service = kinds["Service"]["spec"]
    assert service["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
