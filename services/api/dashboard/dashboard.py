"""The dashboard: a static single page (HTML + JS + CSS shipped in the package) served by the API.

The page holds no secrets and needs no auth to load; it asks for an API key and sends it as a Bearer
token on every call to the job API, so it sees exactly what that key's project may see.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Only these suffixes are served: anything else in the folder (editor backups, caches) stays private.
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
# The page is small and changes with each release; revalidating keeps an upgraded server from
# serving a stale mix of old JS and new API.
_CACHE_HEADERS = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def redirect_root_to_dashboard() -> RedirectResponse:
    """Send visitors of the bare server address to the dashboard."""
    return RedirectResponse(url="/dashboard", status_code=307)


@router.get("/dashboard")
def dashboard_page() -> FileResponse:
    """The dashboard's single HTML page; the client-side router picks the view from the URL hash."""
    return FileResponse(STATIC_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=_CACHE_HEADERS)


@router.get("/dashboard/static/{name}")
def dashboard_asset(name: str) -> FileResponse:
    """One asset file from the static folder (flat: no sub-folders, so no path can escape it)."""
    path = (STATIC_DIR / name).resolve()
    media_type = _MEDIA_TYPES.get(path.suffix)
    if path.parent != STATIC_DIR or media_type is None or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no dashboard asset named {name!r}")
    return FileResponse(path, media_type=media_type, headers=_CACHE_HEADERS)
