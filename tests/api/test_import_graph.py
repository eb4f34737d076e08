"""The api package imports one way: app → route modules → endpoints (no cycle).

A cycle inside api/ (app imported the routes and the routes imported app for ``Api``) made
the import order matter and hid which module owns the pipeline; this keeps it from coming back.
"""

from __future__ import annotations

import ast
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "api"


def _imports(path: Path) -> set[str]:
    """The api modules a module imports at any depth of its body (relative or absolute)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("api."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("api."))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in API.glob("*.py")}
    return {p.stem: _imports(p) & modules for p in API.glob("*.py")}


def test_api_modules_import_without_a_cycle() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle in api/: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_route_modules_take_the_pipeline_from_endpoints() -> None:
    graph = _graph()
    for routes in ("control_routes", "worker_routes", "schedule_routes", "operator_routes", "internal_routes"):
        assert "endpoints" in graph[routes], routes
        assert "app" not in graph[routes], routes
    assert {"control_routes", "worker_routes", "schedule_routes", "operator_routes", "internal_routes"} <= graph["app"]
