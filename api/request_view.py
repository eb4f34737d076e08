"""The request as the pipeline reads it: method, path, query, headers, body — and nothing else.

The pipeline (api.endpoints) runs the same way whether Quart built the request (every route)
or the fast path took it straight from the ASGI scope (api.fast_path): both hand it one of
these. Reading the body is deferred (``await view.data()``) because the pipeline refuses some
requests on their headers alone, without reading what the client sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401 - registers the "werkzeug.url_quote" codec error handler


class Headers:
    """Case-insensitive, first value wins (as werkzeug's ``Headers.get``)."""

    __slots__ = ("_items", "_first")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._first: dict[str, str] = {}
        for name, value in items:
            self._first.setdefault(name.lower(), value)

    @classmethod
    def from_asgi(cls, raw: list[tuple[bytes, bytes]]) -> Headers:
        return cls([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw])

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def to_dict(self) -> dict[str, str]:
        return dict(self._items)


class QueryArgs:
    """The query's parameters, each with all its values, in the order given — parsed exactly as
    werkzeug's ``Request.args`` (UTF-8; invalid escapes stay percent-encoded). A query that is
    not UTF-8 raises ``UnicodeDecodeError`` there as here."""

    __slots__ = ("_lists",)

    def __init__(self, query_string: bytes) -> None:
        self._lists: dict[str, list[str]] = {}
        for name, value in parse_qsl(query_string.decode(), keep_blank_values=True, errors="werkzeug.url_quote"):
            self._lists.setdefault(name, []).append(value)

    def get(self, name: str, default: Any = None) -> Any:
        values = self._lists.get(name)
        return values[0] if values else default

    def lists(self) -> list[tuple[str, list[str]]]:
        return list(self._lists.items())

    def to_dict(self) -> dict[str, str]:
        return {name: values[0] for name, values in self._lists.items()}


class RequestView:
    """One request, read-only, plus the little per-request state the pipeline keeps."""

    __slots__ = ("method", "path", "scope", "headers", "args", "_read", "_body", "close_connection", "json_body", "forwarded")

    def __init__(
        self, scope: dict[str, Any], headers: Headers, args: QueryArgs, read: Callable[[], Awaitable[bytes]]
    ) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers = headers
        self.args = args
        self._read = read
        self._body: bytes | None = None
        self.close_connection = False  # set until the body has been read: an early answer ends the connection
        self.json_body: Any = None
        self.forwarded: tuple[str | None] | None = None  # the verified forwarding member, once checked

    @property
    def query_string(self) -> bytes:
        return self.scope.get("query_string") or b""

    @property
    def raw_target(self) -> str:
        """The path and query exactly as the client sent them (percent-encoding included)."""
        path = self.scope.get("raw_path") or self.path.encode()
        qs = self.query_string
        return (path + (b"?" + qs if qs else b"")).decode("latin-1")

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            return None

    async def data(self) -> bytes:
        if self._body is None:
            self._body = await self._read()
        return self._body
