"""Engines and session factories for SQLite (embedded) and Postgres (production)."""

from __future__ import annotations

import weakref
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SessionFactory = sessionmaker[Session]


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and ``BEGIN IMMEDIATE`` transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _make_sqlite_transactions_immediate(engine)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_recycle", 1800)
    # No pre-ping: it costs a round trip per checkout, which on a busy machine is a scheduler wait as long as
    # the statement itself. A connection the server dropped fails once; SQLAlchemy then invalidates every
    # older pooled connection, and the queue's one-statement operations retry once (see queue_pg).
    kwargs.setdefault("pool_pre_ping", False)
    return create_engine(url, **kwargs)


def _make_sqlite_transactions_immediate(engine: Engine) -> None:
    # pysqlite's implicit BEGIN is deferred: two claimers could both read a queued row and only
    # collide at write time. BEGIN IMMEDIATE takes the write lock up front, so a claim is atomic.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


_autocommit_engines: weakref.WeakKeyDictionary[Engine, dict[bool, Engine]] = weakref.WeakKeyDictionary()


def autocommit_engine(engine: Engine, durable: bool = True) -> Engine:
    """An engine on `engine`'s database whose pooled connections stay in autocommit, for one-statement work.

    A pool of its own, not ``engine.execution_options(isolation_level=...)``: that switches each connection into
    autocommit at checkout and back, with a rollback, at checkin, which cost a fifth of a small request's CPU.
    Nothing is rolled back on return: an autocommit connection has no transaction to end. Disposed with `engine`.
    ``durable=False`` (Postgres): its connections run with ``synchronous_commit = off``, so a commit does not wait
    for the WAL flush; a crash of the database server may then lose the last ~0.6 s of such commits (never
    corrupt them). Only for writes whose loss the protocol already survives (see queue_pg).
    """
    engines = _autocommit_engines.get(engine)
    if engines is None:
        engines = _autocommit_engines[engine] = {}
        event.listen(engine, "engine_disposed", lambda _engine: [child.dispose() for child in engines.values()])
    autocommit = engines.get(durable)
    if autocommit is None:
        pool = engine.pool
        connect_args = {}
        if not durable:  # keep any options the URL already passes (search_path, ...)
            given = engine.url.query.get("options")
            given = " ".join(given) if isinstance(given, tuple) else given
            connect_args["options"] = f"{given} -c synchronous_commit=off" if given else "-c synchronous_commit=off"
        autocommit = engines[durable] = create_engine(
            engine.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None, pool_size=pool.size(),
            max_overflow=getattr(pool, "_max_overflow", 10), pool_recycle=1800, pool_pre_ping=False,
            connect_args=connect_args)
    return autocommit


def make_session_factory(engine: Engine) -> SessionFactory:
    """Sessions that keep loaded attributes readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def is_postgres(engine_or_session: Engine | Session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "postgresql"
