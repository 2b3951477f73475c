"""The queue under contention on Postgres: several processes claim from one queue; leases expire and return."""

from __future__ import annotations

import multiprocessing
import secrets
import time

import pytest
from sqlalchemy import func, select

from services.store import queue
from services.store.engine import make_engine, make_session_factory
from services.store.models import Job, JobEvent
from services.store.projects import ensure_project

NUM_JOBS = 400
NUM_PROCESSES = 4


def _enqueue_noops(sessions, count: int, project_id: str) -> list[str]:
    with sessions.begin() as session:
        return queue.enqueue_jobs(session, [queue.NewJob(project_id=project_id, spec={"noop": True}, method="noop",
                                                         model="none", priority=i % 3) for i in range(count)])


def _claim_until_empty(url: str, worker: str, results) -> None:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    claimed, idle_since = [], None
    while True:
        batch = queue.claim_jobs(sessions, worker, lease_seconds=60, limit=5)
        if not batch:
            idle_since = idle_since or time.time()
            if time.time() - idle_since > 1.0:
                break
            continue
        idle_since = None
        ids = [job.id for job in batch]
        claimed.extend(ids)
        queue.complete_jobs(sessions, ids, worker)
    engine.dispose()
    results.put((worker, claimed))


@pytest.mark.postgres
def test_each_job_is_claimed_exactly_once(postgres_queue_db):
    queue_db = postgres_queue_db
    engine = make_engine(queue_db)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        project_id = ensure_project(session, "default").id
    job_ids = _enqueue_noops(sessions, NUM_JOBS, project_id)
    engine.dispose()

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_claim_until_empty, args=(queue_db, f"proc-{i}", results))
               for i in range(NUM_PROCESSES)]
    for process in workers:
        process.start()
    claims = dict(results.get(timeout=120) for _ in workers)
    for process in workers:
        process.join(timeout=30)
        assert process.exitcode == 0

    everything = [job_id for ids in claims.values() for job_id in ids]
    assert len(everything) == len(set(everything)) == NUM_JOBS and set(everything) == set(job_ids)
    assert sum(1 for ids in claims.values() if ids) >= 2  # the work really was shared
    with sessions() as session:
        statuses = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        starts = session.execute(select(func.count()).where(JobEvent.message.like("Job started%"))).scalar()
    assert statuses == {"succeeded": NUM_JOBS} and starts == NUM_JOBS


def test_expired_lease_is_reclaimed_with_next_attempt(queue_db):
    engine = make_engine(queue_db)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        project_id = ensure_project(session, "default").id
        (job_id,) = queue.enqueue_jobs(session, [queue.NewJob(project_id=project_id, spec={}, method="noop",
                                                              model="none", priority=1000, max_attempts=2)])
    first = queue.claim_next_job(sessions, "dying-worker", lease_seconds=0.2)
    assert first.id == job_id and first.attempt == 1
    assert queue.requeue_expired_leases(sessions) == []  # still leased
    time.sleep(0.3)
    assert queue.requeue_expired_leases(sessions) == [job_id]
    second = queue.claim_next_job(sessions, "healthy-worker", lease_seconds=30)
    assert second.id == job_id and second.attempt == 2
    with pytest.raises(queue.LeaseLost):
        queue.renew_lease(sessions, job_id, "dying-worker", 1)
    with pytest.raises(queue.LeaseLost):
        queue.complete_job(sessions, job_id, "dying-worker")
    with pytest.raises(queue.LeaseLost):
        queue.renew_lease(sessions, job_id, "healthy-worker", 1)  # right worker, stale attempt
    assert queue.renew_lease(sessions, job_id, "healthy-worker", 2) == queue.LeaseFlags(False, False)
    # The last attempt's lease expiring fails the job instead of requeueing it.
    queue.renew_lease(sessions, job_id, "healthy-worker", 2, lease_seconds=0.1)
    time.sleep(0.2)
    assert queue.requeue_expired_leases(sessions) == []
    with sessions() as session:
        job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
        assert job.status == "failed" and job.error["code"] == "lease_expired"
    engine.dispose()


def test_retry_backoff_then_final_failure(queue_db):
    engine = make_engine(queue_db)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        project_id = ensure_project(session, "default").id
        (job_id,) = queue.enqueue_jobs(session, [queue.NewJob(project_id=project_id, spec={}, method="noop",
                                                              model="none", priority=1000, max_attempts=2)])
    claimed = queue.claim_next_job(sessions, "w", 30)
    assert queue.fail_job(sessions, job_id, "w", "flaky", retryable=True, backoff_base_s=0.3) == "queued"
    assert queue.claim_next_job(sessions, "w", 30) is None  # backing off
    time.sleep(0.35)
    claimed = queue.claim_next_job(sessions, "w", 30)
    assert claimed.id == job_id and claimed.attempt == 2
    assert queue.fail_job(sessions, job_id, "w", "flaky", retryable=True) == "failed"  # attempts used up
    engine.dispose()


def _ensure_project_after(url: str, name: str, barrier, results) -> None:
    sessions = make_session_factory(make_engine(url))
    barrier.wait()
    with sessions.begin() as session:
        results.append(ensure_project(session, name).id)


def test_processes_racing_to_ensure_a_project_get_the_same_one(queue_db):
    """`alignd serve --workers N` starts N apps at once, each ensuring the 'default' project: none may crash."""
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        barrier, results = manager.Barrier(NUM_PROCESSES), manager.list()
        name = f"race-{secrets.token_hex(3)}"
        racers = [context.Process(target=_ensure_project_after, args=(queue_db, name, barrier, results))
                  for _ in range(NUM_PROCESSES)]
        for process in racers:
            process.start()
        for process in racers:
            process.join(timeout=60)
        assert [process.exitcode for process in racers] == [0] * NUM_PROCESSES
        assert len(results) == NUM_PROCESSES and len(set(results)) == 1
