"""/v1/models: the built-in tiny model and the models this project's jobs produced (OpenAI model objects)."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import APIRouter

from alignment_core.modeling.tiny import TINY_MODEL_NAME
from services.api.deps import ContextDep, CurrentProject, SessionDep
from services.api.errors import ApiError, bad_request, not_found
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


@router.delete("/{model_id:path}")
def delete_model(model_id: str, session: SessionDep, project: CurrentProject, context: ContextDep) -> dict:
    """OpenAI's model delete for fine-tuned models: the name stops resolving, and its folder is removed when it
    lies in this deployment's storage (a folder elsewhere belongs to whoever put it there)."""
    if model_id == TINY_MODEL_NAME:
        raise bad_request("model: the built-in base model cannot be deleted", "model", code="model_not_deletable")
    row = job_store.get_model(session, project.id, model_id)
    if row is None:
        raise not_found("model", model_id)
    users = job_store.jobs_using_model(session, project.id, model_id)
    if users:
        raise ApiError(409, f"model: unfinished jobs still use it ({', '.join(users)}); cancel them or wait",
                       param="model", code="model_in_use")
    job_store.delete_model(session, row)
    session.commit()
    folder = Path(row.path)
    in_storage = context.blobs.is_local and folder.resolve().is_relative_to(Path(context.blobs.root).resolve())
    if in_storage and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
    return {"id": model_id, "object": "model", "deleted": True}
