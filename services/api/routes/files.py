"""/v1/files: upload (streamed, size-limited, validated), list, retrieve, content, delete; jobs' results files."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from alignment_core.data.formats import DataFormatError, FormatReport, validate_file
from services.api.deps import ContextDep, CurrentProject, SessionDep
from services.api.errors import ApiError, bad_request, not_found
from services.api.result_files import (
    RESULTS_FILENAME,
    RESULTS_PURPOSE,
    is_results_file,
    results_csv,
    results_file_fields,
    results_files,
    results_files_page,
    results_job,
    results_job_key,
)
from services.api.schemas import FilePublic, ListPublic
from services.api.uploads import receive_upload
from services.store.files import TimeKey, add_file, delete_file, file_time_key, get_file, list_files
from services.store.models import Job, new_id

router = APIRouter(prefix="/v1/files", tags=["files"])
PURPOSES = ("fine-tune",)


def content_disposition(filename: str) -> str:
    """An attachment header any filename fits (RFC 6266): headers are latin-1, and a quote would end the name."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _validate_jsonl(path: str) -> FormatReport:
    try:
        return validate_file(path)
    except DataFormatError as error:
        # The message names the line and field (DataFormatError's text); nothing of the upload is kept.
        raise ApiError(400, f"Invalid training file: {error}", param="file", code="invalid_file_format") from None


@router.post("", response_model=FilePublic)
async def upload_file(request: Request, context: ContextDep, project: CurrentProject) -> FilePublic:
    upload = await receive_upload(request, context.settings.max_upload_bytes)
    try:
        if upload.path is None:
            raise bad_request("Missing the 'file' part of the form", "file", code="missing")
        purpose = upload.fields.get("purpose")
        if purpose not in PURPOSES:
            raise bad_request(f"purpose must be one of {list(PURPOSES)}, got {purpose!r}", "purpose")
        report = await run_in_threadpool(_validate_jsonl, upload.path)
        file_id = new_id("file")
        storage_key = f"files/{project.id}/{file_id}.jsonl"
        await run_in_threadpool(context.blobs.put_file, upload.path, storage_key)
        try:
            row = await run_in_threadpool(_store_row, context, project.id, file_id, upload, purpose, storage_key,
                                          report)
        except Exception:
            context.blobs.delete(storage_key)
            raise
        return FilePublic.from_row(row)
    finally:
        upload.discard()


def _store_row(context, project_id, file_id, upload, purpose, storage_key, report):
    with context.sessions.begin() as session:
        return add_file(session, file_id=file_id, project_id=project_id, filename=upload.filename or "upload.jsonl",
                        purpose=purpose, size=upload.size, sha256=upload.sha256, storage_key=storage_key,
                        data_format=report.format, num_examples=report.num_examples)


@router.get("", response_model=ListPublic)
def list_project_files(session: SessionDep, project: CurrentProject, purpose: str | None = None,
                       after: str | None = None, limit: int = Query(100, ge=1, le=10000),
                       order: str = Query("desc", pattern="^(asc|desc)$")) -> ListPublic:
    """Uploads and jobs' results files (OpenAI lists both), merged by (created_at, id)."""
    newest_first = order == "desc"
    cursor = None
    if after is not None:
        cursor = (results_job_key(session, project.id, after) if is_results_file(after)
                  else file_time_key(session, project.id, after))
    items: list[tuple[TimeKey, FilePublic | Job]] = []
    more_uploads = False
    if purpose != RESULTS_PURPOSE:
        rows, more_uploads = list_files(session, project.id, purpose=purpose, after=cursor, limit=limit,
                             newest_first=newest_first)
        items += [((row.created_at, row.id), FilePublic.from_row(row)) for row in rows]
    if purpose in (None, RESULTS_PURPOSE):
        items += results_files_page(session, project.id, cursor, limit, newest_first)
    # Each source gave its first `limit` past the cursor (or more), so the merged first `limit` are the page's.
    items.sort(key=lambda item: item[0], reverse=newest_first)
    page = [item for _, item in items[:limit]]
    results = iter(results_files(session, [item for item in page if isinstance(item, Job)]))
    data = [item if isinstance(item, FilePublic) else FilePublic(**next(results)) for item in page]
    return ListPublic(data=data, has_more=more_uploads or len(items) > limit)


@router.get("/{file_id}", response_model=FilePublic)
def retrieve_file(file_id: str, session: SessionDep, project: CurrentProject) -> FilePublic:
    if is_results_file(file_id):
        job = _results_job_or_404(session, project.id, file_id)
        return FilePublic(**results_file_fields(job, *results_csv(session, job.id)))
    row = get_file(session, project.id, file_id)
    if row is None:
        raise not_found("file", file_id)
    return FilePublic.from_row(row)


@router.get("/{file_id}/content")
def file_content(file_id: str, session: SessionDep, project: CurrentProject, context: ContextDep):
    if is_results_file(file_id):
        job = _results_job_or_404(session, project.id, file_id)
        content, _ = results_csv(session, job.id)
        return Response(content, media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{RESULTS_FILENAME}"'})
    row = get_file(session, project.id, file_id)
    if row is None:
        raise not_found("file", file_id)
    stream = context.blobs.open(row.storage_key)

    def chunks():
        with stream:
            while chunk := stream.read(1 << 16):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/jsonl",
                             headers={"Content-Disposition": content_disposition(row.filename)})


@router.delete("/{file_id}")
def remove_file(file_id: str, session: SessionDep, project: CurrentProject, context: ContextDep) -> dict:
    if is_results_file(file_id):
        _results_job_or_404(session, project.id, file_id)
        raise bad_request("A results file is a view of its job's metrics; it cannot be deleted on its own",
                          "file_id", code="results_file_not_deletable")
    row = get_file(session, project.id, file_id)
    if row is None:
        raise not_found("file", file_id)
    delete_file(session, row)
    # Keep the bytes while an unfinished job still needs them.
    in_use = session.execute(select(Job.id).where(
        Job.project_id == project.id, Job.status.in_(("validating_files", "queued", "running", "paused")),
        (Job.training_file == file_id) | (Job.validation_file == file_id)).limit(1)).first()
    session.commit()
    if in_use is None:
        context.blobs.delete(row.storage_key)
    return {"id": file_id, "object": "file", "deleted": True}


def _results_job_or_404(session: Session, project_id: str, file_id: str) -> Job:
    job = results_job(session, project_id, file_id)
    if job is None:
        raise not_found("file", file_id)
    return job
