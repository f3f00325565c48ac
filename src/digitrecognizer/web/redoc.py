"""/redoc, offline: ReDoc's bundle (shipped by fastapi-offline) with its footer logo pointed at this app's own
icon. The bundle otherwise fetches the logo from cdn.redoc.ly, which the page's content security policy blocks,
leaving an error in the browser console."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, Response

CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
OWN_LOGO = "/static/favicon.svg"
BUNDLE_PATH = "/redoc/redoc.standalone.js"


@lru_cache(maxsize=1)
def _bundle() -> bytes:
    source = Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js"
    return source.read_text(encoding="utf-8").replace(CDN_LOGO, OWN_LOGO).encode()


def add_redoc(app: FastAPI, path: str = "/redoc") -> None:
    @app.get(path, include_in_schema=False)
    async def redoc_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{BUNDLE_PATH}", redoc_favicon_url=f"{root}{OWN_LOGO}",
                              with_google_fonts=False)

    @app.get(BUNDLE_PATH, include_in_schema=False)
    async def redoc_bundle() -> Response:
        return Response(_bundle(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})
