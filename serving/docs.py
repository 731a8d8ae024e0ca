"""``/docs`` (Swagger UI) and ``/redoc`` served with their assets from the installed packages.

FastAPI's own pages load Swagger UI, ReDoc, a favicon and (ReDoc) Google Fonts from public
CDNs, so on a city's intranet, or any network without the internet, they stay blank. The
assets come from the ``fastapi-offline`` package instead (MIT; Swagger UI 5, which reads the
OpenAPI 3.1 schema FastAPI writes, and the ReDoc 2 standalone bundle): it ships them as
package data and needs nothing but FastAPI. Only its ``static`` directory is used, mounted
at :data:`ASSETS_PATH`; the pages are FastAPI's own HTML pointed at it, without Google
Fonts. (``swagger-ui-bundle``, the other package shipping the Swagger UI dist, holds
Swagger UI 4, which cannot read an OpenAPI 3.1 schema, and no ReDoc.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

ASSETS_PATH = "/docs-assets"
DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def assets_directory() -> Path:
    """The installed Swagger UI and ReDoc assets (``swagger-ui-bundle.js``, ``swagger-ui.css``,
    ``redoc.standalone.js``, ``favicon.png``)."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Serve the documentation pages and their assets (the app is made with ``docs_url=None``
    and ``redoc_url=None``, so FastAPI's CDN pages are not registered)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_directory()), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        at = _prefixed(request)
        return get_swagger_ui_html(
            openapi_url=at(str(app.openapi_url)), title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=at(OAUTH2_REDIRECT_PATH), swagger_js_url=at(f"{ASSETS_PATH}/swagger-ui-bundle.js"),
            swagger_css_url=at(f"{ASSETS_PATH}/swagger-ui.css"), swagger_favicon_url=at(f"{ASSETS_PATH}/favicon.png"),
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        at = _prefixed(request)
        return get_redoc_html(openapi_url=at(str(app.openapi_url)), title=f"{app.title} - ReDoc",
                              redoc_js_url=at(f"{ASSETS_PATH}/redoc.standalone.js"),
                              redoc_favicon_url=at(f"{ASSETS_PATH}/favicon.png"), with_google_fonts=False)


def _prefixed(request: Request) -> Callable[[str], str]:
    """A path as the browser reaches it (behind a proxy that serves the app under a prefix)."""
    root = request.scope.get("root_path", "")
    return lambda path: f"{root}{path}"
