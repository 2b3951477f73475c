"""Uploaded training files (metadata rows; the bytes live in the BlobStore)."""

from __future__ import annotations

import time

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

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


def file_format(session: Session, project_id: str, file_id: str) -> str | None:
    """The detected data format of a live file of the project, or None; one column, no ORM object (job creation
    checks every input file)."""
    return session.connection().execute(
        _FILE_FORMAT, {"id": file_id, "project_id": project_id}
    ).scalar_one_or_none()


_FILE_FORMAT = select(File.format).where(File.id == bindparam("id"), File.project_id == bindparam("project_id"),
                                         File.deleted.is_(False))


def list_files(session: Session, project_id: str, *, purpose: str | None = None, after: str | None = None,
               limit: int = 100, newest_first: bool = True) -> tuple[list[File], bool]:
    """A page of files and whether more follow."""
    query = select(File).where(File.project_id == project_id, File.deleted.is_(False))
    if purpose:
        query = query.where(File.purpose == purpose)
    if after:
        cursor = session.execute(select(File.seq).where(File.id == after, File.project_id == project_id)).scalar()
        if cursor is not None:
            query = query.where(File.seq < cursor if newest_first else File.seq > cursor)
    query = query.order_by(File.seq.desc() if newest_first else File.seq).limit(limit + 1)
    rows = list(session.execute(query).scalars())
    return rows[:limit], len(rows) > limit


def delete_file(session: Session, row: File) -> None:
    """Soft delete: jobs that already name the file keep a valid reference."""
    row.deleted = True
