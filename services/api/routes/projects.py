"""/v1/projects and their API keys: admin key only."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import AdminDep, SessionDep
from services.api.errors import ApiError, not_found
from services.api.schemas import ApiKeyCreate, ApiKeyPublic, ListPublic, ProjectCreate, ProjectPublic
from services.store.projects import ProjectExists, create_api_key, create_project, get_project, list_projects

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


@router.post("/{project_id}/api_keys", response_model=ApiKeyPublic)
def create_key(project_id: str, session: SessionDep, _admin: AdminDep,
               body: ApiKeyCreate | None = None) -> ApiKeyPublic:
    project = get_project(session, project_id)
    if project is None:
        raise not_found("project", project_id)
    row, key = create_api_key(session, project, name=body.name if body else None)
    session.commit()
    return ApiKeyPublic.from_row(row, key=key)
