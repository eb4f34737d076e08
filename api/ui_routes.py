"""``/ui``: the built-in web UI, three static files served by this app (no separate process,
no build step). The shell carries no data: every workflow, schedule and node it shows is read
by the browser from the public API under the user's own credentials, so the UI is exactly as
protected as the API. Pages are sent with a content security policy that allows only this
origin's script and style, so a workflow id or payload can never run as code."""

from __future__ import annotations

from pathlib import Path

from quart import Response

from .endpoints import Api

HERE = Path(__file__).resolve().parent / "ui"
FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _answer(data: bytes, content_type: str) -> Response:
    response = Response(data, status=200, content_type=content_type)
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response


def register(api: Api) -> None:
    shell = (HERE / "index.html").read_bytes()
    assets = {name: (HERE / name).read_bytes() for name in FILES}

    async def index() -> Response:
        return _answer(shell, "text/html; charset=utf-8")

    async def asset(name: str) -> Response:
        if name not in assets:
            return Response(b'{"message": "No such UI file.", "reason": "not_found"}', status=404, content_type="application/json")
        return _answer(assets[name], FILES[name])

    api.app.add_url_rule("/ui", endpoint="ui_index", view_func=index, methods=["GET"], provide_automatic_options=False)
    api.app.add_url_rule("/ui/", endpoint="ui_index_slash", view_func=index, methods=["GET"], provide_automatic_options=False)
    api.app.add_url_rule("/ui/static/<name>", endpoint="ui_asset", view_func=asset, methods=["GET"], provide_automatic_options=False)
