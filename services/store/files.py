"""Uploaded training files (metadata rows; the bytes live in the BlobStore)."""

from __future__ import annotations

import time

from sqlalchemy import ColumnElement, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from services.store.async_db import AsyncDatabase
from services.store.models import File


def add_file(session: Session, *, file_id: str, project_id: str, filename: str, purpose: str, size: int,
             sha256: str, storage_key: str, data_format: str, num_examples: int) -> File:
    row = File(id=file_id, project_id=project_id, filename=filename, purpose=purpose, bytes=size, sha256=sha256,
               storage_key=storage_key, format=data_format, num_examples=num_examples, status="processed",
               created_at=time.time(), deleted=False)
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, project_id: str, file_id: str) -> File | None:
    """A live file of the project, or None (another project's file is None too)."""
    return session.execute(
        select(File).where(File.id == file_id, File.project_id == project_id, File.deleted.is_(False))
    ).scalar_one_or_none()


async def file_format(db: AsyncDatabase, project_id: str, file_id: str) -> str | None:
    """The detected data format of a live file of the project, or None (job creation checks every input file)."""
    data_format = await db.scalar(_FILE_FORMAT, {"id": file_id, "project_id": project_id})
    if data_format is not None:
        if len(_KNOWN_FORMATS) >= _KNOWN_FORMATS_MAX:
            _KNOWN_FORMATS.clear()
        _KNOWN_FORMATS[(project_id, file_id)] = data_format
    return data_format


def known_file_format(project_id: str, file_id: str) -> str | None:
    """The format file_format found for this file before, if any, without a query. It says nothing about whether
    the file is still there: whoever uses it must check that elsewhere (queue.NewJob.live_files)."""
    return _KNOWN_FORMATS.get((project_id, file_id))


# (project id, file id) -> format. A file's format is set at upload and never changes (a delete only marks the
# row; ids are never reused), so an entry never goes stale; only its liveness can change.
_KNOWN_FORMATS: dict[tuple[str, str], str] = {}
_KNOWN_FORMATS_MAX = 10_000


_FILE_FORMAT = select(File.format).where(File.id == bindparam("id"), File.project_id == bindparam("project_id"),
                                         File.deleted.is_(False))


# Where a listing resumes: the (created_at, id) of the last item of the previous page. Uploads and results
# files (services/api/result_files.py) share this key, so one page can merge both in OpenAI's order.
TimeKey = tuple[float, str]


def list_files(session: Session, project_id: str, *, purpose: str | None = None, after: TimeKey | None = None,
               limit: int = 100, newest_first: bool = True) -> tuple[list[File], bool]:
    """A page of uploaded files by (created_at, id), and whether more follow."""
    query = select(File).where(File.project_id == project_id, File.deleted.is_(False))
    if purpose:
        query = query.where(File.purpose == purpose)
    if after is not None:
        query = query.where(time_key_beyond(File.created_at, File.id, after, newest_first))
    order = (File.created_at.desc(), File.id.desc()) if newest_first else (File.created_at, File.id)
    rows = list(session.execute(query.order_by(*order).limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit


def file_time_key(session: Session, project_id: str, file_id: str) -> TimeKey | None:
    """The listing key of an uploaded file (deleted ones too, so a page cursor survives a delete)."""
    row = session.execute(select(File.created_at, File.id).where(
        File.id == file_id, File.project_id == project_id)).first()
    return (row.created_at, row.id) if row else None


def time_key_beyond(created: ColumnElement, identifier: ColumnElement, after: TimeKey,
                    newest_first: bool) -> ColumnElement[bool]:
    """Rows strictly past `after` in (created, identifier) order."""
    if newest_first:
        return or_(created < after[0], and_(created == after[0], identifier < after[1]))
    return or_(created > after[0], and_(created == after[0], identifier > after[1]))


def delete_file(session: Session, row: File) -> None:
    """Soft delete: jobs that already name the file keep a valid reference."""
    row.deleted = True
