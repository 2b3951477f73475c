"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from services.api.deps import ContextDep
from services.api.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(context: ContextDep) -> dict:
    try:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        raise ApiError(503, f"database unreachable: {type(error).__name__}", code="database_unavailable") from None
    return {"status": "ok", "database": context.engine.dialect.name}
