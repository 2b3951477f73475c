"""Bearer keys to projects; the bootstrap admin key acts on the 'default' project.

Keys are cached per process so a request costs no key query. The cache is trusted only while it hears every
revocation: on Postgres a thread LISTENs on the revocation channel and drops a revoked key the moment the
revoking transaction commits (in any process: an admin request, `alignd keys revoke`); while that connection is
down, and always on SQLite (no such channel), every request checks its key in the database.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.api.errors import ApiError
from services.store.models import Project
from services.store.projects import DEFAULT_PROJECT, KEY_REVOKED_CHANNEL, ensure_project, hash_key, project_for_key

log = logging.getLogger(__name__)


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "Malformed Authorization header: expected 'Bearer <key>'", code="invalid_api_key")
    return key.strip()


class KeyCache:
    """key hash -> (project, cached at). Off until `enable()`; `forget()` and `disable()` win over a lookup that
    was in flight when they ran (the generation check), so a revoked key is never cached again by a late put."""

    TTL_S = 300.0
    MAX_KEYS = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Project, float]] = {}
        self._enabled = False
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def enabled(self) -> bool:
        return self._enabled

    def get(self, key_hash: str) -> Project | None:
        entry = self._entries.get(key_hash) if self._enabled else None
        if entry is None or time.monotonic() - entry[1] >= self.TTL_S:
            return None
        return entry[0]

    def put(self, key_hash: str, project: Project, generation: int) -> None:
        with self._lock:
            if not self._enabled or generation != self._generation:
                return
            if len(self._entries) >= self.MAX_KEYS:
                self._entries.clear()
            self._entries[key_hash] = (project, time.monotonic())

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._generation += 1
            self._entries.pop(key_hash, None)

    def enable(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()  # whatever was cached before may have been revoked while nobody listened
            self._enabled = True

    def disable(self) -> None:
        with self._lock:
            self._generation += 1
            self._enabled = False
            self._entries.clear()


class RevocationListener:
    """A daemon thread that keeps `cache` enabled while it LISTENs for key revocations on Postgres."""

    RETRY_S = 1.0

    def __init__(self, engine: Engine, cache: KeyCache):
        self._url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._cache, self._stop = cache, threading.Event()
        self._thread = threading.Thread(target=self._run, name="alignd-key-revocations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg  # local: only Postgres deployments need it

        failing = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {KEY_REVOKED_CHANNEL}")
                    self._cache.enable()
                    if failing:
                        log.info("key revocation listener is back; API keys are cached again")
                        failing = False
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=1.0):
                            self._cache.forget(notice.payload)
            except Exception as error:  # any failure means: stop trusting the cache, retry
                if not self._stop.is_set() and not failing:  # once per outage, not every retry
                    log.warning("key revocation listener: %s; checking every key in the database until it is back",
                                error)
                    failing = True
            finally:
                self._cache.disable()
            self._stop.wait(self.RETRY_S)


def _is_admin(key: str, admin_key: str | None) -> bool:
    return bool(admin_key) and hmac.compare_digest(key.encode(), admin_key.encode())


def cached_caller(request: Request, cache: KeyCache, admin_key: str | None) -> tuple[Project, bool] | None:
    """The caller from the key cache without touching the database (None on a miss); 401 for a missing key."""
    key = bearer_key(request)
    project = cache.get(hash_key(key))
    return None if project is None else (project, _is_admin(key, admin_key))


def authenticate(request: Request, session: Session, admin_key: str | None,
                 cache: KeyCache | None = None) -> tuple[Project, bool]:
    """The caller's project and whether the caller holds the admin key; 401 for a missing, bad or revoked key."""
    key = bearer_key(request)
    key_hash, is_admin = hash_key(key), _is_admin(key, admin_key)
    generation = cache.generation if cache is not None else 0
    if is_admin:
        project = ensure_project(session, DEFAULT_PROJECT)
        session.commit()
    else:
        project = project_for_key(session, key)
        # End the read now: on SQLite every transaction holds the write lock, and a handler may open its own.
        session.commit()
        if project is None:
            raise ApiError(401, "Invalid API key", code="invalid_api_key")
    if cache is not None:
        cache.put(key_hash, project, generation)
    return project, is_admin
