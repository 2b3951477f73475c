"""Build the FastAPI app: `create_app(settings)` migrates the database and wires routers and error handlers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from services.api.auth import RevocationListener
from services.api.dashboard import router as dashboard_router
from services.api.deps import AppContext
from services.api.errors import install_error_handlers
from services.api.guards import install_guards
from services.api.hot_routes import HotJobRoutes
from services.api.routes import docs, files, health, jobs, models, pipelines, projects
from services.settings import Settings, configure_logging, get_settings
from services.store.async_db import AsyncDatabase
from services.store.blobs import BlobStore
from services.store.engine import autocommit_engine, make_engine, make_session_factory
from services.store.migrate import upgrade_database
from services.store.projects import DEFAULT_PROJECT, ensure_project


def create_app(settings: Settings | None = None, migrate: bool = True) -> FastAPI:
    """The alignd REST API. Migrations run here (not in a lifespan) so a mounted sub-app is ready too."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    database_url = settings.resolved_database_url
    if migrate:
        upgrade_database(database_url)
    # Enough pooled connections for every handler thread and then some: a request keeps its connection until
    # its response is sent, and responses that FastAPI serializes wait for a handler thread first.
    engine = make_engine(database_url, **({} if engine_is_sqlite(database_url) else {
        "pool_size": 2 * HANDLER_THREADS, "max_overflow": 6 * HANDLER_THREADS}))
    sessions = make_session_factory(engine)
    read_sessions = None if engine_is_sqlite(database_url) else make_session_factory(autocommit_engine(engine))
    with sessions.begin() as session:
        ensure_project(session, DEFAULT_PROJECT)

    # /docs is our own route (services/api/routes/docs.py: no CDN); ReDoc has no offline bundle, so it is off.
    app = FastAPI(title="alignd", version="0.1.0", lifespan=_lifespan, docs_url=None, redoc_url=None,
                  description="Fine-tuning and alignment jobs behind an OpenAI-shaped API.")
    app.state.alignd = AppContext(settings=settings, engine=engine, sessions=sessions,
                                  blobs=BlobStore(settings.resolved_storage_uri),
                                  db=AsyncDatabase(engine, sessions, pool_size=ASYNC_POOL_SIZE),
                                  read_sessions=read_sessions)
    install_error_handlers(app)
    app.add_middleware(HotJobRoutes)  # added before the guards: inside them (services/api/hot_routes.py)
    install_guards(app)
    # The jobs router first: a request is matched against the routers in this order, and job creates and lists are
    # most of the traffic (no paths overlap, so the order changes nothing else; /docs lists jobs first).
    for module in (jobs, health, files, pipelines, models, projects, docs):
        app.include_router(module.router)
    app.include_router(dashboard_router)
    return app


# Sync handlers run in anyio's thread pool (40 threads by default). On a small machine 40 threads that take
# turns on the GIL and on a handful of cores finish every request late; fewer threads let requests queue in
# arrival order on the event loop and each one, once started, finish quickly (lower tail latency).
HANDLER_THREADS = 8
# Connections of the async pool the hot routes share. Each holds one only for one statement, on the event loop
# that serializes them anyway; a few cover the round trips in flight at once.
ASYNC_POOL_SIZE = 8


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = HANDLER_THREADS
    context: AppContext = app.state.alignd
    listener = None if context.read_sessions is None else RevocationListener(context.engine, context.keys)
    if listener is not None:
        listener.start()
    await context.db.open()
    _freeze_startup_objects()
    try:
        yield
    finally:
        await context.db.close()
        if listener is not None:
            await anyio.to_thread.run_sync(listener.stop)


_frozen = False


def _freeze_startup_objects() -> None:
    """Take what start-up built (modules, the app, pydantic schemas: ~140,000 objects) out of the cyclic GC.

    A full collection traversed all of them: ~30 ms on this 2-core VM, during which every request in flight waits
    (50 at once in the closed-loop benchmark: its slowest 1-2% were such pauses). Frozen, they are never traversed
    again. Once per process: tests build many apps in one process, and later apps' garbage should stay collectable."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


def engine_is_sqlite(database_url: str) -> bool:
    return database_url.startswith("sqlite")
