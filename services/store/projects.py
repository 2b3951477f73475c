"""Projects and API keys; keys are stored as sha256 hashes only."""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.store.models import ApiKey, Project, new_id

DEFAULT_PROJECT = "default"
KEY_PREFIX = "ak-"


class ProjectNotFound(LookupError):
    def __init__(self, name: str):
        super().__init__(f"no project '{name}'")
        self.name = name


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
    """The project named `name`, created if missing."""
    return get_project(session, name) or create_project(session, name)


def list_projects(session: Session) -> list[Project]:
    return list(session.execute(select(Project).order_by(Project.created_at)).scalars())


def create_api_key(session: Session, project: Project, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key for `project`; returns the row and the plain key, which is shown once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), project_id=project.id, key_hash=hash_key(key), prefix=key[:10], name=name,
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
