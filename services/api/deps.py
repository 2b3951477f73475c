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
from services.store.async_db import AsyncDatabase
from services.store.blobs import BlobStore
from services.store.engine import SessionFactory
from services.store.models import Project


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: SessionFactory
    blobs: BlobStore
    db: AsyncDatabase  # the hot routes' statements, without a thread hop (opened in the app's lifespan)
    read_sessions: SessionFactory | None = None  # autocommit sessions for GET requests (Postgres)
    keys: KeyCache = field(default_factory=KeyCache)  # enabled while revocations are heard (see auth)

    def open_session(self, autocommit: bool) -> Session:
        """A session a handler opens and closes itself (``with context.open_session(...) as session``).

        The busiest routes use this instead of SessionDep: a generator dependency costs every request an exit
        stack and a shielded cancel scope on the event loop, the one thread all requests share. ``autocommit``
        (Postgres only) suits reads and single-statement writes: no BEGIN and COMMIT round trips."""
        factory = self.read_sessions if autocommit and self.read_sessions is not None else self.sessions
        return factory()


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


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Caller:
    project: Project
    is_admin: bool


async def get_caller(request: Request) -> Caller:
    # The context is read here, not through ContextDep: every dependency FastAPI solves costs each request CPU
    # on the event loop, and this one runs on every request.
    context: AppContext = request.app.state.alignd
    known = cached_caller(request, context.keys, context.settings.admin_key)
    if known is None:  # a key not cached (or the cache is off): look it up off the event loop
        known = await run_in_threadpool(_authenticate, request, context)
    project, is_admin = known
    return Caller(project=project, is_admin=is_admin)


def _authenticate(request: Request, context: AppContext) -> tuple[Project, bool]:
    with context.sessions() as session:
        return authenticate(request, session, context.settings.admin_key, context.keys)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_current_project(request: Request) -> Project:
    return (await get_caller(request)).project


CurrentProject = Annotated[Project, Depends(get_current_project)]


async def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise ApiError(403, "Only the admin key may manage projects and keys", code="admin_required")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
