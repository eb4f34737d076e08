"""Every credential can come from a file named by ``<NAME>_FILE`` (Docker/Kubernetes secrets):
read at start, one trailing newline dropped, the plain variable winning when both are set, and an
unreadable file refused with the variable's name instead of starting without the credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from runtime.config import Config, ConfigError

from .node_harness import running_node

CREDENTIALS = [
    ("DW_AUTH_TOKEN", "auth_tokens", "legacy"),
    ("DW_WORKER_TOKEN", "auth_tokens", "worker"),
    ("DW_OPERATOR_TOKEN", "auth_tokens", "operator"),
    ("DW_ADMIN_TOKEN", "auth_tokens", "admin"),
    ("DW_SIGNATURE_KEY", "signature_keys", "legacy"),
    ("DW_WORKER_SIGNATURE_KEY", "signature_keys", "worker"),
    ("DW_OPERATOR_SIGNATURE_KEY", "signature_keys", "operator"),
    ("DW_ADMIN_SIGNATURE_KEY", "signature_keys", "admin"),
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, _, _ in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


@pytest.mark.parametrize(("variable", "field", "role"), CREDENTIALS)
def test_each_credential_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, field: str, role: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(f"{role}-from-file\n")
    monkeypatch.setenv(f"{variable}_FILE", str(secret))
    cfg = Config.from_env()
    assert getattr(cfg, field) == {role: f"{role}-from-file"}  # the newline an editor adds is not part of it


def test_the_plain_variable_wins_and_an_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file")
    monkeypatch.setenv("DW_ADMIN_TOKEN_FILE", str(secret))
    monkeypatch.setenv("DW_ADMIN_TOKEN", "from-env")
    assert Config.from_env().auth_tokens == {"admin": "from-env"}
    monkeypatch.delenv("DW_ADMIN_TOKEN")
    monkeypatch.setenv("DW_ADMIN_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="DW_ADMIN_TOKEN_FILE"):
        Config.from_env()


async def test_a_token_from_a_file_authenticates_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "operator").write_text("operator-from-file\n")
    monkeypatch.setenv("DW_AUTH_DRIVER", "token")
    monkeypatch.setenv("DW_OPERATOR_TOKEN_FILE", str(tmp_path / "operator"))
    cfg = Config.from_env()
    async with running_node(tmp_path / "data", auth_driver=cfg.auth_driver, auth_tokens=cfg.auth_tokens) as node:
        client = create_app(node).test_client()
        cp = {"X-Durable-Workflow-Control-Plane-Version": "2"}
        allowed = await client.get("/api/workflows", headers={**cp, "Authorization": "Bearer operator-from-file"})
        path_as_token = await client.get("/api/workflows", headers={**cp, "Authorization": f"Bearer {tmp_path / 'operator'}"})
        anonymous = await client.get("/api/workflows", headers=cp)
    assert allowed.status_code == 200
    assert path_as_token.status_code == 401 and anonymous.status_code == 401
