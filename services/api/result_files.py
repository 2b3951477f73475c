"""A succeeded job's results file, as OpenAI returns one: a CSV of its step metrics, purpose `fine-tune-results`.

The file is a view of the job's metrics rows, not a stored upload: its id is derived from the job's, and it is
rendered when read (`/v1/files/{id}`, `/v1/files/{id}/content`), so it always matches what the worker reported
and no worker has to write it.
"""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

from sqlalchemy.orm import Session

from services.store import jobs as job_store
from services.store.files import TimeKey
from services.store.models import Job, JobMetric

RESULTS_FILE_PREFIX = "file-results-"
JOB_PREFIX = "ftjob-"
RESULTS_PURPOSE = "fine-tune-results"
RESULTS_FILENAME = "step_metrics.csv"


def results_file_ids(job_id: str, status: str) -> list[str]:
    """A job's `result_files`: one results file once it succeeded, none before."""
    return [RESULTS_FILE_PREFIX + job_id.removeprefix(JOB_PREFIX)] if status == "succeeded" else []


def is_results_file(file_id: str) -> bool:
    return file_id.startswith(RESULTS_FILE_PREFIX)


def results_job(session: Session, project_id: str, file_id: str) -> Job | None:
    """The succeeded job of this project whose results file `file_id` is, or None."""
    job = job_store.get_job(session, project_id, JOB_PREFIX + file_id.removeprefix(RESULTS_FILE_PREFIX))
    return job if job is not None and job.status == "succeeded" else None


def results_job_key(session: Session, project_id: str, file_id: str) -> TimeKey | None:
    """Where a file listing resumes after this results file (see services.store.files.TimeKey)."""
    job = results_job(session, project_id, file_id)
    return (job.finished_at, job.id) if job is not None and job.finished_at is not None else None


def results_files_page(session: Session, project_id: str, after: TimeKey | None, limit: int,
                       newest_first: bool) -> list[tuple[TimeKey, Job]]:
    """Up to `limit` + 1 succeeded jobs past `after`, each with its listing key, for a merged /v1/files page."""
    jobs = job_store.list_succeeded_jobs(session, project_id, after=after, limit=limit, newest_first=newest_first)
    return [((job.finished_at or job.created_at, job.id), job) for job in jobs]


def results_files(session: Session, jobs: list[Job]) -> list[dict[str, Any]]:
    """FilePublic fields of these jobs' results files (their metrics read in one query)."""
    metrics = job_store.metrics_of_jobs(session, [job.id for job in jobs])
    return [results_file_fields(job, *_csv(metrics[job.id])) for job in jobs]


# OpenAI's results-file columns, read from the trainer's per-step names; a client that plots an OpenAI results
# file reads these. The trainer's own `train_loss` (one end-of-run average) would collide with the first.
OPENAI_RESULT_COLUMNS = {"train_loss": "loss", "train_accuracy": "mean_token_accuracy", "valid_loss": "eval_loss",
                         "valid_mean_token_accuracy": "eval_mean_token_accuracy"}


def results_csv(session: Session, job_id: str) -> tuple[bytes, int]:
    """The CSV and its number of rows: ``step``, OpenAI's columns, then every other metric name, sorted (the
    trainer's names stay too); empty where a step lacks one."""
    return _csv(job_store.all_metrics(session, job_id))


def _csv(rows: list[JobMetric]) -> tuple[bytes, int]:
    names = sorted({name for row in rows for name in row.metrics} - set(OPENAI_RESULT_COLUMNS))
    sources = [*OPENAI_RESULT_COLUMNS.values(), *names]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["step", *OPENAI_RESULT_COLUMNS, *names])
    for row in rows:
        writer.writerow([row.step, *(row.metrics.get(name, "") for name in sources)])
    return text.getvalue().encode(), len(rows)


def results_file_fields(job: Job, content: bytes, steps: int) -> dict[str, Any]:
    """The FilePublic fields of a results file."""
    return {"id": results_file_ids(job.id, job.status)[0], "bytes": len(content),
            "created_at": int(job.finished_at or job.created_at), "filename": RESULTS_FILENAME,
            "purpose": RESULTS_PURPOSE, "status": "processed", "format": "csv", "num_examples": steps,
            "sha256": hashlib.sha256(content).hexdigest()}
