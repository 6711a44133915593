"""The interactive API docs from this server alone: Swagger UI at /docs, ReDoc at /redoc.

FastAPI's own pages load their scripts and styles from a CDN, which an air-gapped cluster
cannot reach (a blank page). These are FastAPI's pages with the assets the fastapi-offline
package ships (its Swagger UI and ReDoc builds), served under /docs/assets, and the web
page's favicon; FastAPI's documented self-hosting. No Google fonts, and no badge from
Swagger's online validator. Public, as the OpenAPI document they read is: no data in them.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

from api.routes.pages import PageFiles

ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
ASSETS_URL = "/docs/assets"
FAVICON_URL = "/static/favicon.svg"
DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL = "/docs", "/redoc", "/docs/oauth2-redirect"


def install(app: FastAPI) -> None:
    """On an app made with docs_url=None and redoc_url=None: the same pages, self-hosted.
    Routes outside the OpenAPI document and its authentication, as FastAPI's are."""
    openapi_url = app.openapi_url

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        prefix = root(request)
        return get_swagger_ui_html(
            openapi_url=prefix + openapi_url, title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=prefix + OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{prefix}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{prefix}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=prefix + FAVICON_URL,
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None})

    async def oauth2_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        prefix = root(request)
        return get_redoc_html(openapi_url=prefix + openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{prefix}{ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=prefix + FAVICON_URL, with_google_fonts=False)

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)
    app.mount(ASSETS_URL, PageFiles(ASSETS_DIR), name="docs-assets")
