"""/docs: Swagger UI served from the installed package, so the API docs work without internet access.

FastAPI's own /docs page loads Swagger UI from a CDN, and self-hosted installs are often air-gapped."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from services.api.errors import not_found

router = APIRouter(include_in_schema=False)
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    assets = f"{request.scope.get('root_path', '')}/docs/assets/"  # behind a proxy's path prefix too
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title="alignd API",
                               swagger_js_url=f"{assets}swagger-ui-bundle.js",
                               swagger_css_url=f"{assets}swagger-ui.css",
                               swagger_favicon_url=f"{assets}favicon-32x32.png")


@router.get("/docs/assets/{name}")
async def swagger_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise not_found("docs asset", name)
    return FileResponse(Path(swagger_ui_path) / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})
