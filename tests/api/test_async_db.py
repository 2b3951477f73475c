"""The API's async database on a real Postgres: more concurrent statements than connections, a connection the
server dropped, and psycopg's errors surfacing as SQLAlchemy's."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import exc, insert, text

from services.store.async_db import AsyncDatabase
from services.store.engine import make_engine, make_session_factory
from services.store.models import Project

SLOW_PID = text("SELECT pg_backend_pid() FROM pg_sleep(0.02)")
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"  # as in conftest (test modules import no module)
NEW_PROJECT = insert(Project).values(id="proj-async-db", name="async-db", created_at=0.0).returning(Project.id)


async def _pids(db: AsyncDatabase, count: int) -> list[int]:
    return list(await asyncio.gather(*(db.scalar(SLOW_PID, {}) for _ in range(count))))


@pytest.mark.postgres
def test_pool_shares_a_few_connections_and_recovers_from_a_dropped_one(postgres_queue_db):
    engine = make_engine(postgres_queue_db)

    async def scenario() -> None:
        db = AsyncDatabase(engine, make_session_factory(engine), pool_size=3)
        await db.open()
        try:
            pids = await _pids(db, 30)
            assert len(pids) == 30 and len(set(pids)) <= 3  # 30 statements at once on at most 3 connections
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                for pid in set(pids):
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            failures = 0
            for _ in range(len(set(pids)) + 1):  # each dropped connection fails once, then is replaced
                try:
                    await db.scalar(SLOW_PID, {})
                except exc.OperationalError:
                    failures += 1
            assert 1 <= failures <= len(set(pids))
            after = await _pids(db, 30)  # no slot was lost with the dropped connections
            assert len(after) == 30 and not set(after) & set(pids) and len(set(after)) <= 3

            assert await db.scalar(NEW_PROJECT, {}) == "proj-async-db"
            with pytest.raises(exc.IntegrityError):  # what the API's idempotency race and error handlers catch
                await db.scalar(NEW_PROJECT, {})
            assert await db.scalar(SLOW_PID, {})  # the connection that failed is usable again
        finally:
            await db.close()

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()
