"""Rules of the house that a reader can rely on, checked on the source (issue 11).

- The runtime asks a run's actor; it never reads the actor's state (``actor.state``): only
  the actor builds views of its run, from committed state.
- Actor messages are matched by type, never dispatched by name (``getattr(self, f"_on_…")``).
- The shared vocabulary is spelled once: the id alphabet lives in ``persistence.vocabulary``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_no_runtime_module_reads_an_actors_state() -> None:
    offenders = []
    for path in _modules("runtime"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "state":
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id == "self"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"runtime reads state it should ask the actor for: {offenders}"


def test_actor_messages_are_not_dispatched_by_name() -> None:
    offenders = []
    for package in ("actors", "runtime", "api"):
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
                    name = node.args[1] if len(node.args) > 1 else None
                    if isinstance(name, ast.JoinedStr) and any(
                        isinstance(v, ast.Constant) and "_on_" in str(v.value) for v in name.values
                    ):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_id_alphabet_is_written_once() -> None:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    holders = [
        str(path.relative_to(ROOT))
        for package in ("actors", "runtime", "api", "persistence", "ops")
        for path in _modules(package)
        if alphabet in path.read_text()
    ]
    assert holders == ["persistence/vocabulary.py"]
