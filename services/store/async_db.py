"""The API's hot statements without a thread hop: psycopg's async pool on Postgres, a worker thread on SQLite.

The statements are the store's own SQLAlchemy Core statements, compiled once for the engine's dialect and then
sent through psycopg directly: SQLAlchemy's execution layer cost three times the CPU of the query itself on a
page of jobs, and its async engine adds a greenlet switch to that. SQLite (embedded, one process) runs the same
statements on the sync engine in a worker thread, so both backends share every query.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from pydantic_core import to_json
from sqlalchemy import JSON, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from services.store.engine import SessionFactory

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class _Compiled:
    """A statement's SQL for psycopg (bytes: psycopg caches the converted query by it), the values of its literal
    binds and its bind processors (JSON, booleans)."""

    sql: bytes
    defaults: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]

    def parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        values = {**self.defaults, **params}
        for name, process in self.processors.items():
            if name in values:
                values[name] = process(values[name])
        return values


def _json_text(value: Any) -> str:
    # The compiled SQL casts the parameter (``%(spec)s::JSONB``), so JSON travels as text; None is JSON null, as
    # SQLAlchemy writes it in these columns.
    return to_json(value).decode()


class AsyncDatabase:
    """Runs Core statements for async route handlers; open() and close() in the app's lifespan.

    Not opened (an app driven without its lifespan), statements take the worker-thread path on Postgres too, and
    notify_workers sends nothing: idle dispatchers then find new jobs at their next poll."""

    def __init__(self, engine: Engine, sessions: SessionFactory, pool_size: int = 10):
        self.engine, self.sessions, self.pool_size = engine, sessions, pool_size
        self.is_postgres = engine.dialect.name == "postgresql"
        self._pool: _ConnectionPool | None = None
        self._compiled: dict[Executable, _Compiled] = {}
        self._notifier: _Notifier | None = None

    async def open(self) -> None:
        if not self.is_postgres:
            return
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool = _ConnectionPool(conninfo, self.pool_size)
        await self._pool.release(await self._pool.acquire())  # fail at start-up, not at the first request
        self._notifier = _Notifier(conninfo)

    async def close(self) -> None:
        if self._notifier is not None:
            await self._notifier.close()
        if self._pool is not None:
            await self._pool.close()

    def _compile(self, statement: Executable) -> _Compiled:
        compiled = self._compiled.get(statement)
        if compiled is None:
            dialect = self.engine.dialect
            result = statement.compile(dialect=dialect)
            processors = {}
            for name, bind in result.binds.items():
                impl = bind.type.dialect_impl(dialect)
                process = _json_text if isinstance(impl, JSON) else impl.bind_processor(dialect)
                if process is not None:
                    processors[name] = process
            defaults = {name: bind.value for name, bind in result.binds.items()
                        if not bind.required and bind.value is not None}
            compiled = self._compiled[statement] = _Compiled(result.string.encode(), defaults, processors)
        return compiled

    async def rows(self, statement: Executable, params: dict[str, Any]) -> list[tuple]:
        """Every row of `statement` as tuples, in its column order."""
        if self._pool is None:
            return await anyio.to_thread.run_sync(self._rows_in_thread, statement, params)
        compiled = self._compile(statement)
        values = compiled.parameters(params)
        connection = await self._pool.acquire()
        try:
            cursor = connection.cursor
            await cursor.execute(compiled.sql, values)
            return await cursor.fetchall()  # every statement run here returns rows
        except Exception as error:
            raise _as_sqlalchemy_error(error, compiled.sql.decode(), values) from error
        finally:
            await self._pool.release(connection)

    async def row(self, statement: Executable, params: dict[str, Any]) -> tuple | None:
        rows = await self.rows(statement, params)
        return rows[0] if rows else None

    async def scalar(self, statement: Executable, params: dict[str, Any]) -> Any:
        row = await self.row(statement, params)
        return None if row is None else row[0]

    def _rows_in_thread(self, statement: Executable, params: dict[str, Any]) -> list[tuple]:
        with self.engine.begin() as connection:
            result = connection.execute(statement, params)
            return [tuple(row) for row in result] if result.returns_rows else []

    async def in_transaction(self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one committed transaction, in a worker thread: for multi-statement writes."""
        return await anyio.to_thread.run_sync(partial(self._transaction, work))

    def _transaction(self, work: Callable[[Session], T]) -> T:
        with self.sessions.begin() as session:
            return work(session)

    def notify_workers(self) -> None:
        """Wake idle dispatchers once the caller's jobs are committed (a no-op on SQLite). Returns at once: the
        notice goes out from a background task, and requests that arrive while one is being sent share the next."""
        if self._notifier is not None:
            self._notifier.request()


_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE (psycopg is imported only where Postgres is used)


class _Connection:
    """A pooled connection (autocommit: each statement commits itself, one round trip) and its one cursor.
    psycopg prepares a statement server-side after its 5th use on a connection, so the hot queries skip parsing
    and planning from then on."""

    def __init__(self, connection: Any):
        self.connection, self.cursor = connection, connection.cursor()

    @property
    def reusable(self) -> bool:
        """Open and idle: a statement that failed or was cancelled midway leaves it otherwise."""
        return not self.connection.closed and self.connection.pgconn.transaction_status == _IDLE


class _ConnectionPool:
    """At most `size` connections, idle ones reused last-in first-out; one that broke is closed on return and a
    waiting request opens a new one. Smaller than psycopg_pool (not a dependency of alignd) and, with no
    background tasks or health checks, cheaper per checkout: a request costs two list operations."""

    def __init__(self, conninfo: str, size: int):
        self._conninfo, self._size = conninfo, size
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    async def acquire(self) -> _Connection:
        if self._idle:
            return self._idle.pop()
        if self._open >= self._size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed something just before the cancel
                    if waiter.result() is not None:
                        await self.release(waiter.result())
                    else:
                        self._open -= 1
                        self._hand_on(None)
                raise
            if handed is not None:
                return handed
        else:  # a slot of a closed connection was handed on as None: open one in it
            self._open += 1
        try:
            import psycopg

            return _Connection(await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True))
        except BaseException:
            self._open -= 1
            self._hand_on(None)
            raise

    async def release(self, connection: _Connection) -> None:
        if connection.reusable:
            if not self._hand_on(connection):
                self._idle.append(connection)
            return
        self._open -= 1
        self._hand_on(None)
        with contextlib.suppress(Exception):
            await connection.connection.close()

    def _hand_on(self, connection: _Connection | None) -> bool:
        """Give a waiting request this connection (or, None, the right to open one); False if nobody waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if connection is None:
                    self._open += 1
                waiter.set_result(connection)
                return True
        return False

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._open -= 1
            await connection.connection.close()


def _as_sqlalchemy_error(error: Exception, sql: str, params: dict[str, Any]) -> Exception:
    """psycopg's errors as SQLAlchemy's (IntegrityError, DataError, ...), which the API already handles."""
    import psycopg

    if isinstance(error, psycopg.Error):
        return DBAPIError.instance(sql, params, error, psycopg.Error, hide_parameters=True)
    return error


class _Notifier:
    """Sends NOTIFY (queue.NOTIFY_CHANNEL) on one connection of its own, which does not wait for the WAL flush.

    Not inside the job's insert: Postgres holds one cluster-wide lock from a notifying transaction's commit until
    its flush is done, so a NOTIFY in each create made every create wait for the previous one's flush (460-510
    against 690-1,020 creates/s without it, 50 clients, same run). A notice lost in a crash costs a dispatcher
    one poll interval (they also wake on a timer). A request sets an event; the task sends one notice per
    wake-up, after every job committed before it, so a burst of creates costs one round trip, not one each.
    After a notice it waits MIN_INTERVAL_S before the next: under steady load (a create every millisecond) the
    task sent one notice almost per create, ~5% of the server's CPU and a commit each in Postgres; a dispatcher
    woken 10 ms later does not notice, a training job takes minutes."""

    MIN_INTERVAL_S = 0.01

    def __init__(self, conninfo: str):
        self._conninfo, self._wake = conninfo, asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alignd-notify")

    def request(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        import psycopg

        from services.store.queue import NOTIFY_CHANNEL

        connection = None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    if connection is None or connection.closed:
                        connection = await psycopg.AsyncConnection.connect(
                            self._conninfo, autocommit=True, options="-c synchronous_commit=off")
                    await connection.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
                except Exception as error:  # a lost notice costs a dispatcher one poll interval
                    log.warning("could not notify workers: %s", error)
                    connection = None
                await asyncio.sleep(self.MIN_INTERVAL_S)  # requests meanwhile set the event: one notice for all
        finally:
            if connection is not None:
                await connection.close()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
