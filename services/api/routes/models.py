"""/v1/models: the built-in tiny model and the models this project's jobs produced (OpenAI model objects)."""

from __future__ import annotations

from fastapi import APIRouter

from alignment_core.modeling.tiny import TINY_MODEL_NAME
from services.api.deps import CurrentProject, SessionDep
from services.api.errors import not_found
from services.api.schemas import ListPublic, ModelPublic
from services.store import jobs as job_store

router = APIRouter(prefix="/v1/models", tags=["models"])
BUILT_IN = ModelPublic(id=TINY_MODEL_NAME, created=0, owned_by="alignd", kind="base")


@router.get("", response_model=ListPublic)
def list_models(session: SessionDep, project: CurrentProject) -> ListPublic:
    models = [BUILT_IN] + [ModelPublic.from_row(row) for row in job_store.list_models(session, project.id)]
    return ListPublic(data=models)


@router.get("/{model_id:path}", response_model=ModelPublic)
def retrieve_model(model_id: str, session: SessionDep, project: CurrentProject) -> ModelPublic:
    if model_id == TINY_MODEL_NAME:
        return BUILT_IN
    row = job_store.get_model(session, project.id, model_id)
    if row is None:
        raise not_found("model", model_id)
    return ModelPublic.from_row(row)
