"""/v1/projects and their API keys (create, list, revoke): admin key only."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import AdminDep, ContextDep, SessionDep
from services.api.errors import ApiError, not_found
from services.api.schemas import ApiKeyCreate, ApiKeyPublic, ListPublic, ProjectCreate, ProjectPublic
from services.store.models import Project
from services.store.projects import (
    ApiKeyNotFound,
    ProjectExists,
    create_api_key,
    create_project,
    find_api_key,
    get_project,
    list_api_keys,
    list_projects,
    revoke_api_key,
)

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.post("", response_model=ProjectPublic)
def create(body: ProjectCreate, session: SessionDep, _admin: AdminDep) -> ProjectPublic:
    try:
        project = create_project(session, body.name)
    except ProjectExists as error:
        raise ApiError(409, str(error), param="name", code="project_exists") from None
    session.commit()
    return ProjectPublic.from_row(project)


@router.get("", response_model=ListPublic)
def list_all(session: SessionDep, _admin: AdminDep) -> ListPublic:
    return ListPublic(data=[ProjectPublic.from_row(row) for row in list_projects(session)])


def _project_or_404(session, project_id: str) -> Project:
    project = get_project(session, project_id)
    if project is None:
        raise not_found("project", project_id)
    return project


@router.post("/{project_id}/api_keys", response_model=ApiKeyPublic)
def create_key(project_id: str, session: SessionDep, _admin: AdminDep,
               body: ApiKeyCreate | None = None) -> ApiKeyPublic:
    project = _project_or_404(session, project_id)
    row, key = create_api_key(session, project, name=body.name if body else None)
    session.commit()
    return ApiKeyPublic.from_row(row, key=key)


@router.get("/{project_id}/api_keys", response_model=ListPublic)
def list_keys(project_id: str, session: SessionDep, _admin: AdminDep) -> ListPublic:
    project = _project_or_404(session, project_id)
    return ListPublic(data=[ApiKeyPublic.from_row(row) for row in list_api_keys(session, project.id)])


@router.delete("/{project_id}/api_keys/{key_id}", response_model=ApiKeyPublic)
def revoke_key(project_id: str, key_id: str, session: SessionDep, context: ContextDep,
               _admin: AdminDep) -> ApiKeyPublic:
    """Revoke a key (by id or shown prefix): its next request, to any API process, gets 401."""
    project = _project_or_404(session, project_id)
    try:
        row = revoke_api_key(session, find_api_key(session, key_id, project_id=project.id))
    except ApiKeyNotFound as error:
        raise ApiError(404, str(error), param="key_id", code="api_key_not_found") from None
    session.commit()
    context.keys.forget(row.key_hash)  # this process at once; others when the commit's notice reaches them
    return ApiKeyPublic.from_row(row)
