"""Dependencies declared once: the app context, a DB session per request, the caller's project."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.api.auth import KeyCache, authenticate, cached_caller
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
    read_sessions: SessionFactory | None = None  # autocommit sessions for GET requests (Postgres)
    keys: KeyCache = field(default_factory=KeyCache)  # enabled while revocations are heard (see auth)


# Dependencies that do no blocking I/O are `async def`: FastAPI runs a plain `def` dependency in the thread
# pool, and each hop there costs a thread switch and a turn at the GIL on every request.
async def get_context(request: Request) -> AppContext:
    return request.app.state.alignd


ContextDep = Annotated[AppContext, Depends(get_context)]


READ_METHODS = frozenset({"GET", "HEAD"})
_CLOSE_LIMITER = anyio.CapacityLimiter(8)


async def _open_session(context: AppContext, autocommit: bool) -> AsyncIterator[Session]:
    session = (context.read_sessions if autocommit else context.sessions)()
    try:
        yield session
    finally:
        if autocommit or not session.in_transaction():
            session.close()  # nothing to roll back: no I/O
        else:
            # A rollback is a round trip: off the event loop, on threads of its own. The handler threads may all
            # be waiting for a pooled connection that only this close gives back.
            await anyio.to_thread.run_sync(session.close, limiter=_CLOSE_LIMITER)


async def get_session(request: Request, context: ContextDep) -> AsyncIterator[Session]:
    """The request's session (opening one does no I/O). GETs on Postgres run in autocommit: under READ COMMITTED
    every statement takes its own snapshot anyway, and a read costs one round trip instead of BEGIN, query and
    ROLLBACK."""
    async for session in _open_session(context, request.method in READ_METHODS and context.read_sessions is not None):
        yield session


async def get_autocommit_session(context: ContextDep) -> AsyncIterator[Session]:
    """An autocommit session on Postgres (a transactional one on SQLite), for handlers whose only write is one
    statement: it commits by itself, so BEGIN and COMMIT, two round trips, are saved. A handler that writes
    more than once opens a transaction of its own (``context.sessions.begin()``)."""
    async for session in _open_session(context, context.read_sessions is not None):
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
AutocommitSessionDep = Annotated[Session, Depends(get_autocommit_session)]


@dataclass(frozen=True)
class Caller:
    project: Project
    is_admin: bool


async def get_caller(request: Request, session: SessionDep, context: ContextDep) -> Caller:
    known = cached_caller(request, context.keys, context.settings.admin_key)
    if known is None:  # a key not cached (or the cache is off): look it up off the event loop
        known = await run_in_threadpool(authenticate, request, session, context.settings.admin_key, context.keys)
    project, is_admin = known
    return Caller(project=project, is_admin=is_admin)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_current_project(caller: CallerDep) -> Project:
    return caller.project


CurrentProject = Annotated[Project, Depends(get_current_project)]


async def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise ApiError(403, "Only the admin key may manage projects and keys", code="admin_required")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
