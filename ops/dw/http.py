"""The HTTP side of ``dw``: one request, its authentication, and what a refusal means for the
exit code a script sees.

Exit codes: 0 success; 1 the server refused the request (4xx other than below) or the
workflow failed; 2 usage error; 3 not found; 4 not authenticated or not allowed; 5 the
server is unreachable or unavailable (5xx, 503 while rebalancing).
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from hashlib import sha256
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from api.signatures import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, canonical_request

from .settings import Settings

CP_HEADER = "X-Durable-Workflow-Control-Plane-Version"
EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_UNAVAILABLE = 1, 2, 3, 4, 5


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED, body: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = body


def _exit_code(status: int) -> int:
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (401, 403):
        return EXIT_AUTH
    if status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


class ApiClient:
    def __init__(self, settings: Settings, timeout: float = 70.0) -> None:
        self.settings = settings
        self.http = httpx.Client(base_url=settings.server, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _headers(self, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
        s = self.settings
        headers = {CP_HEADER: "2", "X-Namespace": s.namespace, "Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        if s.token:
            headers["Authorization"] = f"Bearer {s.token}"
        elif s.signature_key:
            timestamp, nonce = str(int(time.time())), uuid.uuid4().hex
            canonical = canonical_request(method, urlsplit(self.settings.server + path).path, query, s.namespace, timestamp,
                                          body, nonce)
            headers.update({TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce,
                            SIGNATURE_HEADER: hmac.new(s.signature_key.encode(), canonical, sha256).hexdigest()})
        return headers

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """The answer's JSON; ``CliError`` with the server's message and the exit code otherwise."""
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        raw = json.dumps(body).encode() if body is not None else b""
        url = f"{path}?{query}" if query else path
        try:
            r = self.http.request(method, url, content=raw or None, headers=self._headers(method, path, query, raw),
                                  timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.settings.server}: {exc}", EXIT_UNAVAILABLE) from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 400:
            message = data.get("message") if isinstance(data, dict) else None
            reason = data.get("reason") if isinstance(data, dict) else None
            text = f"{message or r.text[:300] or r.reason_phrase} ({r.status_code}{', ' + reason if reason else ''})"
            raise CliError(text, _exit_code(r.status_code), data)
        return data

    def pages(self, path: str, params: dict[str, Any], *keys: str, all_pages: bool) -> tuple[list[Any], str | None]:
        """The items of a listing under the first of ``keys`` its answer has: one page, or every
        page with ``all_pages``; and the token of the next page if one is left."""
        items: list[Any] = []
        token = None
        while True:
            data = self.call("GET", path, params={**params, "next_page_token": token})
            items.extend(next((data[k] for k in keys if data.get(k)), []))
            token = data.get("next_page_token")
            if not all_pages or not token:
                return items, token
