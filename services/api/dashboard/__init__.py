"""The web dashboard served by the API (static files, no build step)."""

from services.api.dashboard.dashboard import router

__all__ = ["router"]
