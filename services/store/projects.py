"""Projects and API keys; keys are stored as sha256 hashes only."""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.store.engine import is_postgres
from services.store.models import ApiKey, Project, new_id

DEFAULT_PROJECT = "default"
KEY_PREFIX = "ak-"
SHOWN_PREFIX = 10  # characters of a key kept in clear, to tell keys apart in listings
# API processes cache keys; a revocation is announced here (payload: the key's hash) so they drop it at once.
KEY_REVOKED_CHANNEL = "alignd_key_revoked"


class ProjectNotFound(LookupError):
    def __init__(self, name: str):
        super().__init__(f"no project '{name}'")
        self.name = name


class ApiKeyNotFound(LookupError):
    def __init__(self, reference: str, matches: int = 0):
        detail = f"{matches} keys start with '{reference}'; give the key id" if matches else f"no API key '{reference}'"
        super().__init__(detail)
        self.reference, self.matches = reference, matches


class ProjectExists(ValueError):
    def __init__(self, name: str):
        super().__init__(f"a project named '{name}' already exists")
        self.name = name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_project(session: Session, id_or_name: str) -> Project | None:
    """A project by id or by name."""
    return session.execute(
        select(Project).where((Project.id == id_or_name) | (Project.name == id_or_name))
    ).scalars().first()


def create_project(session: Session, name: str) -> Project:
    if get_project(session, name) is not None:
        raise ProjectExists(name)
    project = Project(id=new_id("proj"), name=name, created_at=time.time())
    session.add(project)
    session.flush()
    return project


def ensure_project(session: Session, name: str) -> Project:
    """The project named `name`, created if missing; safe when several processes race to create it (the API's
    workers all ensure 'default' as they start)."""
    project = get_project(session, name)
    if project is not None:
        return project
    try:
        with session.begin_nested():  # a savepoint: losing the race must not end the caller's transaction
            return create_project(session, name)
    except (IntegrityError, ProjectExists):  # another process created it since the first look
        project = get_project(session, name)
        if project is None:
            raise
        return project


def list_projects(session: Session) -> list[Project]:
    return list(session.execute(select(Project).order_by(Project.created_at)).scalars())


def create_api_key(session: Session, project: Project, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key for `project`; returns the row and the plain key, which is shown once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), project_id=project.id, key_hash=hash_key(key), prefix=key[:SHOWN_PREFIX], name=name,
                 created_at=time.time())
    session.add(row)
    session.flush()
    return row, key


def project_for_key(session: Session, key: str) -> Project | None:
    """The project a live key belongs to, or None for an unknown or revoked key."""
    return session.execute(
        select(Project).join(ApiKey, ApiKey.project_id == Project.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()


def list_api_keys(session: Session, project_id: str | None = None) -> list[ApiKey]:
    """Keys (revoked ones too), oldest first; all projects' unless `project_id` is given."""
    query = select(ApiKey).order_by(ApiKey.created_at)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    return list(session.execute(query).scalars())


def find_api_key(session: Session, reference: str, project_id: str | None = None) -> ApiKey:
    """The key whose id (or the key itself) is `reference`, or the only one whose shown prefix starts with it."""
    query = select(ApiKey)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    exact = session.execute(query.where((ApiKey.id == reference) | (ApiKey.key_hash == hash_key(reference)))
                            ).scalar_one_or_none()
    if exact is not None:
        return exact
    # A prefix as listings show it ('ak-' and seven characters); 'ak-' alone would name every key.
    if len(reference) <= len(KEY_PREFIX) or len(reference) > SHOWN_PREFIX:
        raise ApiKeyNotFound(reference)
    matches = list(session.execute(query.where(ApiKey.prefix.startswith(reference, autoescape=True))).scalars())
    if len(matches) != 1:
        raise ApiKeyNotFound(reference, len(matches))
    return matches[0]


def revoke_api_key(session: Session, key: ApiKey) -> ApiKey:
    """Revoke `key` in the caller's transaction (idempotent). On Postgres the commit also tells every API process
    (LISTEN on KEY_REVOKED_CHANNEL) to forget the key, so its next request is refused."""
    if key.revoked_at is None:
        key.revoked_at = time.time()
        session.flush()
    if is_postgres(session):
        session.execute(text("SELECT pg_notify(:channel, :key_hash)"),
                        {"channel": KEY_REVOKED_CHANNEL, "key_hash": key.key_hash})
    return key
