"""`/docs` (Swagger UI) and `/redoc` (ReDoc) served without a CDN.

FastAPI's own pages load their JavaScript and CSS from cdn.jsdelivr.net, so they are blank on
a machine without internet. These load the copies the `fastapi-offline` package ships (MIT;
Swagger UI is Apache-2.0, ReDoc MIT) from this server, under `/docs-static`. The pages show
no data of their own, so they are not behind the API key; the OpenAPI document they read
stays where FastAPI serves it.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/docs-static"
STATIC_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def install_offline_docs(app: FastAPI) -> None:
    """Mount the assets and register `/docs`, its OAuth2 redirect and `/redoc` on `app`,
    which must have been built with `docs_url=None, redoc_url=None`."""
    if not (STATIC_DIR / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"fastapi-offline's assets are missing from {STATIC_DIR}")
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")

    def root(request: Request) -> str:
        # Behind a proxy that strips a path prefix, every link keeps the prefix.
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        at = root(request)
        return get_swagger_ui_html(
            openapi_url=f"{at}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{at}{OAUTH2_REDIRECT_URL}",  # the page adds its origin
            swagger_js_url=f"{at}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{at}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{at}{STATIC_URL}/favicon.png",
            # No validator badge: it is an image from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        at = root(request)
        return get_redoc_html(
            openapi_url=f"{at}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{at}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{at}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
