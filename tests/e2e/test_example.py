"""The README's example must keep working against a real server."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_order_approval_example_runs(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "order_approval.py"
    spec = importlib.util.spec_from_file_location("order_approval_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    asyncio.run(module.main(server_url))
    out = capsys.readouterr().out
    assert "'approved_by': 'ada@example.com'" in out
    assert "shipped order-" in out
