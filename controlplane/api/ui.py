"""The management web UI at ``/ui``: the built single-page app's files (``web/dist``), its
client-side routes answered with ``index.html``, hashed assets cached for a year, ``index.html``
revalidated every time, and a content security policy that lets the page load and call only this
origin (no CDN: it works air-gapped). The files hold no secret; the API authenticates every call."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from controlplane.api import errors

PREFIX = "/ui"
#: The checkout's build (``make ui``); an installed image sets ``api.ui_dir``.
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "web" / "dist"
IMMUTABLE = "public, max-age=31536000, immutable"
#: CodeMirror and Mantine write <style> elements at run time: styles need 'unsafe-inline'; scripts do not.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}  # fmt: skip


class UiFiles(StaticFiles):
    """Static files where a path that names no file and looks like a page (no extension, not
    under ``assets/``) is the app's own route: it gets ``index.html``, and the app draws it."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
            cache = IMMUTABLE if path.startswith("assets/") else "no-cache"
        except HTTPException as exc:
            if exc.status_code != 404 or path.startswith("assets/") or "." in path.rsplit("/", 1)[-1]:
                raise  # a missing asset is a 404, never a page in its place
            response = await super().get_response("index.html", scope)
            cache = "no-cache"
        response.headers["Cache-Control"] = cache
        response.headers.update(HEADERS)
        return response


def install(app: FastAPI, directory: Path | None) -> None:
    """Serve the UI from ``directory`` (the checkout's build by default) and send ``/`` to it;
    without a build, ``/ui`` answers a 404 that says how to build it."""
    where = directory or DEFAULT_DIR

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    if (where / "index.html").is_file():
        app.mount(PREFIX, UiFiles(directory=where, html=True), name="ui")
        return

    @app.get(PREFIX, include_in_schema=False)
    @app.get(PREFIX + "/{path:path}", include_in_schema=False)
    async def missing(path: str = "") -> Response:
        detail = f"the web UI is not built in {where}: run 'make ui' (needs Node.js 20 and npm)"
        return errors.problem(404, "UI Not Built", detail)
