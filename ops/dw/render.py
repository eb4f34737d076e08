"""How ``dw`` shows an answer: a table or key/value panel for people (rich), the server's JSON
for scripts (``--output json``, one document on stdout, nothing else there)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from persistence import avro

out = Console(soft_wrap=True)
err = Console(stderr=True)


def payload(value: Any) -> Any:
    """A payload envelope or bare blob as the value it carries (for people; JSON output keeps the envelope)."""
    if isinstance(value, dict) and "blob" in value or isinstance(value, str) and len(value) > 8:
        decoded = avro.decode_envelope(value)
        return value if decoded is None else decoded
    return value


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def as_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*(cell(row.get(c)) for c in columns))
    out.print(t)
    if not rows:
        err.print("[dim](nothing)[/dim]")


def fields(data: dict[str, Any], keys: Sequence[str], title: str | None = None) -> None:
    t = Table(title=title, show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for key in keys:
        if key in data and data[key] not in (None, {}, []):
            t.add_row(key, cell(data[key]))
    out.print(t)
