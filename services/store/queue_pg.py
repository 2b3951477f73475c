"""The queue's hot path on Postgres: each operation is one statement on an autocommit connection.

A single statement is atomic on its own, so a claim, heartbeat, completion or failure needs one round trip:
no BEGIN / COMMIT, and data-modifying CTEs write the event rows (and release or fail dependents) in the same
statement. psycopg prepares each statement after a few uses, so repeated calls skip parsing and planning.
All CTEs of a statement see one snapshot: a CTE that reads ``jobs`` sees the rows as they were before the
statement, which is why the dependency checks below treat the job being finished as already succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.exc import DBAPIError

from services.store.engine import SessionFactory, autocommit_engine
from services.store.models import Job

T = TypeVar("T")
_JSON = Job.__table__.c.result.type
_WAITING = "('validating_files', 'queued', 'paused')"


# Claims and lease renewals commit without waiting for the WAL flush (synchronous_commit = off): a single worker
# pays two commits per job, and the flush was most of each. Losing one in a database crash is safe: a lost claim
# leaves the job queued (the claimer's renew and complete find another owner and raise LeaseLost; the job runs
# again), a lost renewal shortens a lease the next renewal extends or, at worst, hands the job to another worker
# with the same fencing. Completions, failures and everything a client wrote stay durable.
RELAXED_CLAIMS = True


@contextmanager
def autocommit_connection(sessions: SessionFactory, durable: bool = True) -> Iterator[Connection]:
    """A pooled connection in autocommit mode on the database behind `sessions`."""
    with autocommit_engine(sessions.kw["bind"], durable=durable).connect() as connection:
        yield connection


def execute_once(sessions: SessionFactory, operation: Callable[[Connection], T], durable: bool = True) -> T:
    """Run a one-statement operation; retried once on a fresh connection if the pooled one was dropped.

    The pool does not ping connections, so the first use after a server restart fails with a disconnect. A
    statement whose connection broke before it committed had no effect; one that committed and lost only its
    answer leaves a lease that expires (claim, renew) or a finished job the retry reports as ``LeaseLost``.
    ``durable=False`` is for claims and renewals only (see RELAXED_CLAIMS).
    """
    durable = durable or not RELAXED_CLAIMS
    try:
        with autocommit_connection(sessions, durable) as connection:
            return operation(connection)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    with autocommit_connection(sessions, durable) as connection:
        return operation(connection)


CLAIM = text("""
WITH candidates AS (
    SELECT seq FROM jobs
    WHERE status = 'queued' AND NOT blocked AND run_after <= :now
    ORDER BY priority DESC, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs AS j
    SET status = 'running', lease_owner = :worker, lease_expires_at = :expires, attempts = j.attempts + 1,
        started_at = :now, updated_at = :now, cancel_requested = false
    FROM candidates AS c WHERE j.seq = c.seq
    RETURNING j.id, j.project_id, j.spec, j.attempts, j.max_attempts, j.lease_expires_at, j.seed, j.depends_on,
              j.output_model, j.metadata AS metadata_, j.pipeline_id, j.priority, j.seq
), logged AS (
    INSERT INTO job_events (job_id, level, type, message, data, created_at)
    SELECT id, 'info', 'message', 'Job started (attempt ' || attempts || ') on ' || :worker,
           jsonb_build_object('attempt', attempts, 'worker_id', CAST(:worker AS text)), :now
    FROM claimed
)
SELECT * FROM claimed ORDER BY priority DESC, seq
""")

RENEW = text("""
UPDATE jobs SET lease_expires_at = :expires
WHERE id = :id AND lease_owner = :worker AND status = 'running'
  AND (CAST(:attempt AS integer) IS NULL OR attempts = :attempt)
RETURNING cancel_requested, pause_requested
""")

# Unblock waiting dependents of the finished jobs in `done` whose other inputs all succeeded.
_RELEASE = f"""
released AS (
    UPDATE jobs AS d SET blocked = false, updated_at = :now
    WHERE d.blocked AND d.status IN {_WAITING}
      AND d.id IN (SELECT dep.job_id FROM job_dependencies AS dep JOIN done ON dep.depends_on_job_id = done.id)
      AND NOT EXISTS (
          SELECT 1 FROM job_dependencies AS other JOIN jobs AS input ON input.id = other.depends_on_job_id
          WHERE other.job_id = d.id AND input.status <> 'succeeded'
            AND input.id NOT IN (SELECT id FROM done))
    RETURNING d.id
), released_logged AS (
    INSERT INTO job_events (job_id, level, type, message, data, created_at)
    SELECT id, 'info', 'message', 'Inputs are ready; the job can start', NULL, :now FROM released
)"""

COMPLETE_MANY = text(f"""
WITH done AS (
    UPDATE jobs
    SET status = 'succeeded', finished_at = :now, updated_at = :now, lease_owner = NULL, lease_expires_at = NULL,
        fine_tuned_model = output_model
    WHERE id = ANY(:ids) AND lease_owner = :worker AND status = 'running'
    RETURNING id
), logged AS (
    INSERT INTO job_events (job_id, level, type, message, data, created_at)
    SELECT id, 'info', 'message', 'The job has successfully completed', NULL, :now FROM done
), {_RELEASE}
SELECT id FROM done
""")

COMPLETE = text(f"""
WITH done AS (
    UPDATE jobs
    SET status = 'succeeded', finished_at = :now, updated_at = :now, lease_owner = NULL, lease_expires_at = NULL,
        result = :result, trained_tokens = :trained_tokens,
        fine_tuned_model = COALESCE(CAST(:fine_tuned_model AS text), output_model),
        package_versions = COALESCE(:package_versions, package_versions)
    WHERE id = :id AND lease_owner = :worker AND status = 'running'
      AND (CAST(:attempt AS integer) IS NULL OR attempts = :attempt)
    RETURNING id, fine_tuned_model, project_id, model
), logged AS (
    INSERT INTO job_events (job_id, level, type, message, data, created_at)
    SELECT id, 'info', 'message', 'The job has successfully completed',
           jsonb_build_object('fine_tuned_model', fine_tuned_model,
                              'trained_tokens', CAST(:trained_tokens AS bigint)), :now
    FROM done
), registered AS (
    INSERT INTO models (id, project_id, job_id, path, base_model, kind, metadata, created_at)
    SELECT fine_tuned_model, project_id, id, CAST(:model_path AS text), model, :model_kind, NULL, :now
    FROM done WHERE CAST(:model_path AS text) IS NOT NULL
    ON CONFLICT (id) DO UPDATE SET path = EXCLUDED.path, kind = EXCLUDED.kind
), {_RELEASE}
SELECT fine_tuned_model FROM done
""").bindparams(bindparam("result", type_=_JSON), bindparam("package_versions", type_=_JSON))

# A failed attempt goes back to the queue after a backoff while attempts remain, else fails and takes every
# waiting job that (transitively) depends on it with it.
FAIL = text(f"""
WITH RECURSIVE changed AS (
    UPDATE jobs
    SET lease_owner = NULL, lease_expires_at = NULL, updated_at = :now,
        status = CASE WHEN :retryable AND attempts < max_attempts THEN 'queued' ELSE 'failed' END,
        run_after = CASE WHEN :retryable AND attempts < max_attempts
                         THEN :now + LEAST(:backoff_base * power(2, attempts - 1), :backoff_max) ELSE run_after END,
        finished_at = CASE WHEN :retryable AND attempts < max_attempts THEN finished_at ELSE :now END,
        error = CASE WHEN :retryable AND attempts < max_attempts THEN error ELSE :error END
    WHERE id = :id AND lease_owner = :worker AND status = 'running'
      AND (CAST(:attempt AS integer) IS NULL OR attempts = :attempt)
    RETURNING id, status, attempts, run_after - :now AS delay
), logged AS (
    INSERT INTO job_events (job_id, level, type, message, data, created_at)
    SELECT id,
           CASE WHEN status = 'queued' THEN 'warn' ELSE 'error' END, 'message',
           CASE WHEN status = 'queued'
                THEN 'Attempt ' || attempts || ' failed: ' || :message || '; retrying in '
                     || CAST(round(delay) AS bigint) || 's'
                ELSE 'The job failed: ' || :message END,
           CASE WHEN status = 'queued' THEN jsonb_build_object('error', :error, 'retry_in_s', delay)
                ELSE jsonb_build_object('error', :error) END,
           :now
    FROM changed
), cascade(id, source, source_status, depth) AS (
    SELECT dep.job_id, dep.depends_on_job_id, CAST('failed' AS text), 1
    FROM changed JOIN job_dependencies AS dep ON dep.depends_on_job_id = changed.id
    JOIN jobs AS waiting ON waiting.id = dep.job_id AND waiting.status IN {_WAITING}
    WHERE changed.status = 'failed'
    UNION ALL
    SELECT dep.job_id, dep.depends_on_job_id, CAST('failed' AS text), cascade.depth + 1
    FROM cascade JOIN job_dependencies AS dep ON dep.depends_on_job_id = cascade.id
    JOIN jobs AS waiting ON waiting.id = dep.job_id AND waiting.status IN {_WAITING}
), victims AS (
    SELECT DISTINCT ON (id) id, 'input job ''' || source || ''' ' || source_status || ', so this job cannot run'
           AS message
    FROM cascade ORDER BY id, depth
), failed_dependents AS (
    UPDATE jobs AS j
    SET status = 'failed', blocked = false, finished_at = :now, updated_at = :now,
        error = jsonb_build_object('code', 'dependency_failed', 'message', v.message, 'param', 'model')
    FROM victims AS v WHERE j.id = v.id
    RETURNING j.id, v.message
), dependents_logged AS (
    INSERT INTO job_events (job_id, level, type, message, data, created_at)
    SELECT id, 'error', 'message', message, NULL, :now FROM failed_dependents
)
SELECT status FROM changed
""").bindparams(bindparam("error", type_=_JSON))


def claim(connection: Connection, worker_id: str, lease_seconds: float, limit: int) -> list[Any]:
    """Rows of the jobs leased to `worker_id`, in claim order."""
    now = time.time()
    return connection.execute(CLAIM, {"now": now, "limit": limit, "worker": worker_id,
                                      "expires": now + lease_seconds}).all()


def renew(connection: Connection, job_id: str, worker_id: str, attempt: int | None, lease_seconds: float) -> Any:
    """The (cancel_requested, pause_requested) row, or None when the lease is lost."""
    return connection.execute(RENEW, {"id": job_id, "worker": worker_id, "attempt": attempt,
                                      "expires": time.time() + lease_seconds}).first()


def complete_many(connection: Connection, job_ids: list[str], worker_id: str) -> list[str]:
    """Ids of the held jobs now succeeded."""
    return list(connection.execute(COMPLETE_MANY, {"now": time.time(), "ids": list(job_ids),
                                                   "worker": worker_id}).scalars().all())


def complete(connection: Connection, job_id: str, worker_id: str, attempt: int | None, values: dict[str, Any]) -> Any:
    """The fine_tuned_model of the completed job, or None when the lease is lost."""
    row = connection.execute(COMPLETE, {"now": time.time(), "id": job_id, "worker": worker_id, "attempt": attempt,
                                        **values}).first()
    return None if row is None else row.fine_tuned_model


def fail(connection: Connection, job_id: str, worker_id: str, attempt: int | None, error: dict[str, Any],
         retryable: bool, backoff_base_s: float, backoff_max_s: float) -> str | None:
    """The job's new status ('queued' or 'failed'), or None when the lease is lost."""
    row = connection.execute(FAIL, {
        "now": time.time(), "id": job_id, "worker": worker_id, "attempt": attempt, "error": error,
        "message": str(error.get("message", "unknown error")), "retryable": retryable,
        "backoff_base": backoff_base_s, "backoff_max": backoff_max_s,
    }).first()
    return None if row is None else row.status
