"""The resolved settings and the API client, carried on typer's context to every command."""

from __future__ import annotations

import typer

from .http import ApiClient
from .settings import Settings


def settings_of(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.find_root().obj["settings"]
    return settings


def client_of(ctx: typer.Context) -> ApiClient:
    root = ctx.find_root()
    client: ApiClient | None = root.obj.get("client")
    if client is None:
        client = root.obj["client"] = ApiClient(settings_of(ctx))
        root.call_on_close(client.close)
    return client
