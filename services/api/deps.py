"""Dependencies declared once: the app context, a DB session per request, the caller's project."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.api.auth import authenticate
from services.api.errors import ApiError
from services.settings import Settings
from services.store.blobs import BlobStore
from services.store.engine import SessionFactory
from services.store.models import Project


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: SessionFactory
    blobs: BlobStore


def get_context(request: Request) -> AppContext:
    return request.app.state.alignd


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Caller:
    project: Project
    is_admin: bool


def get_caller(request: Request, session: SessionDep, context: ContextDep) -> Caller:
    project, is_admin = authenticate(request, session, context.settings.admin_key)
    return Caller(project=project, is_admin=is_admin)


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_current_project(caller: CallerDep) -> Project:
    return caller.project


CurrentProject = Annotated[Project, Depends(get_current_project)]


def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise ApiError(403, "Only the admin key may manage projects and keys", code="admin_required")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
