"""Queue state changes on both backends: fencing, events, dependency release and failure cascades."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.store import queue
from services.store.engine import make_engine, make_session_factory
from services.store.models import Job, JobEvent, RegisteredModel
from services.store.projects import ensure_project


@pytest.fixture()
def sessions(queue_db):
    engine = make_engine(queue_db)
    yield make_session_factory(engine)
    engine.dispose()


def _enqueue(sessions, project_id: str, depends_on: list[str] | None = None, max_attempts: int = 3) -> str:
    with sessions.begin() as session:
        (job_id,) = queue.enqueue_jobs(session, [queue.NewJob(
            project_id=project_id, spec={"noop": True}, method="noop", model="none", priority=5000,
            depends_on=depends_on or [], max_attempts=max_attempts)])
    return job_id


def _job(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.execute(select(Job).where(Job.id == job_id)).scalar_one()


def _events(sessions, job_id: str) -> list[JobEvent]:
    with sessions() as session:
        return list(session.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
                    .scalars().all())


def _claim(sessions, worker: str, expected: str) -> queue.ClaimedJob:
    claimed = queue.claim_next_job(sessions, worker, 30)
    assert claimed is not None and claimed.id == expected
    return claimed


def test_complete_is_fenced_registers_the_model_and_releases_dependents(sessions):
    with sessions.begin() as session:
        project_id = ensure_project(session, "semantics").id
    first, second = _enqueue(sessions, project_id), _enqueue(sessions, project_id)
    dependent = _enqueue(sessions, project_id, depends_on=[first, second])
    assert _job(sessions, dependent).blocked

    claimed = _claim(sessions, "w1", first)
    with pytest.raises(queue.LeaseLost):
        queue.renew_lease(sessions, first, "w1", attempt=claimed.attempt + 1)
    with pytest.raises(queue.LeaseLost):
        queue.complete_job(sessions, first, "w2", attempt=claimed.attempt)
    flags = queue.renew_lease(sessions, first, "w1", attempt=claimed.attempt, lease_seconds=60)
    assert flags == queue.LeaseFlags(cancel_requested=False, pause_requested=False)
    model_id = queue.complete_job(sessions, first, "w1", attempt=claimed.attempt, result={"loss": 0.5},
                                  trained_tokens=123, model_path="/models/first", model_kind="policy")
    assert model_id == f"ft-{first}"
    job = _job(sessions, first)
    assert (job.status, job.result, job.trained_tokens, job.lease_owner) == ("succeeded", {"loss": 0.5}, 123, None)
    assert queue.resolve_model(sessions, model_id) == "/models/first"
    with sessions() as session:
        model = session.execute(select(RegisteredModel).where(RegisteredModel.id == model_id)).scalar_one()
    assert (model.project_id, model.job_id, model.base_model) == (project_id, first, "none")
    done = _events(sessions, first)[-1]
    assert done.message == "The job has successfully completed"
    assert done.data == {"fine_tuned_model": model_id, "trained_tokens": 123}
    assert _job(sessions, dependent).blocked  # its second input is still queued
    with pytest.raises(queue.LeaseLost):  # a finished job cannot be finished again
        queue.complete_job(sessions, first, "w1", attempt=claimed.attempt)

    claimed = _claim(sessions, "w1", second)
    assert queue.complete_job(sessions, second, "w1", fine_tuned_model="custom-name") == "custom-name"
    assert not _job(sessions, dependent).blocked
    assert _events(sessions, dependent)[-1].message == "Inputs are ready; the job can start"
    claimed = _claim(sessions, "w1", dependent)
    assert claimed.input_models == {model_id: "/models/first"}
    queue.complete_jobs(sessions, [dependent], "w1")
    assert _job(sessions, dependent).status == "succeeded"


def test_fail_retries_with_backoff_then_fails_dependents_transitively(sessions):
    with sessions.begin() as session:
        project_id = ensure_project(session, "semantics").id
    root = _enqueue(sessions, project_id, max_attempts=2)
    child = _enqueue(sessions, project_id, depends_on=[root])
    grandchild = _enqueue(sessions, project_id, depends_on=[child, root])

    claimed = _claim(sessions, "w1", root)
    assert queue.fail_job(sessions, root, "w1", "flaky", retryable=True, attempt=claimed.attempt,
                          backoff_base_s=10.0) == "queued"
    job = _job(sessions, root)
    assert job.status == "queued" and job.lease_owner is None and job.run_after - job.updated_at == pytest.approx(10)
    retry = _events(sessions, root)[-1]
    assert (retry.level, retry.message) == ("warn", "Attempt 1 failed: flaky; retrying in 10s")
    assert retry.data["retry_in_s"] == pytest.approx(10) and retry.data["error"]["message"] == "flaky"
    assert queue.claim_next_job(sessions, "w1", 30) is None  # backing off; the others wait on it

    with sessions.begin() as session:  # skip the backoff
        session.get(Job, _job(sessions, root).seq).run_after = 0.0
    claimed = _claim(sessions, "w1", root)
    assert claimed.attempt == 2
    with pytest.raises(queue.LeaseLost):
        queue.fail_job(sessions, root, "w1", "boom", attempt=1)
    error = {"code": "oom", "message": "out of memory", "param": None}
    assert queue.fail_job(sessions, root, "w1", error, retryable=True, attempt=2) == "failed"  # attempts used up
    job = _job(sessions, root)
    assert (job.status, job.error, job.lease_owner) == ("failed", error, None) and job.finished_at is not None
    assert _events(sessions, root)[-1].message == "The job failed: out of memory"
    for dependent in (child, grandchild):
        job = _job(sessions, dependent)
        assert job.status == "failed" and job.error["code"] == "dependency_failed"
        assert "so this job cannot run" in _events(sessions, dependent)[-1].message
    assert _job(sessions, child).error["message"] == f"input job '{root}' failed, so this job cannot run"


def test_a_running_job_shows_its_total_steps_and_estimated_finish(sessions):
    from services.api.schemas import JobPublic
    from services.workers.progress import STORE_INTERVAL_S, StepPace

    with sessions.begin() as session:
        project_id = ensure_project(session, "progress").id
    job_id = _enqueue(sessions, project_id)
    _claim(sessions, "w", job_id)
    pace = StepPace(sessions, job_id)
    pace.planned(100)
    job = JobPublic.from_row(_job(sessions, job_id))
    assert job.status == "running" and job.total_steps == 100 and job.estimated_finish is None
    assert job.started_at is not None and job.started_at >= job.created_at

    pace.step_done(1, now=1000.0)  # the first step starts the clock: loading the model is not training pace
    assert _job(sessions, job_id).estimated_finish is None
    pace.step_done(11, now=1010.0)  # 10 steps in 10 s, 89 to go
    assert JobPublic.from_row(_job(sessions, job_id)).estimated_finish == 1099
    pace.step_done(12, now=1010.0 + STORE_INTERVAL_S / 2)  # rewritten at most every few seconds
    assert _job(sessions, job_id).estimated_finish == 1099
    pace.step_done(51, now=1010.0 + STORE_INTERVAL_S + 40)  # slower now: 50 steps in 55 s
    assert _job(sessions, job_id).estimated_finish == pytest.approx(1055.0 + 49 * 55 / 50)

    queue.complete_job(sessions, job_id, "w", model_path="/models/m")
    done = JobPublic.from_row(_job(sessions, job_id))
    assert done.status == "succeeded" and done.estimated_finish is None and done.total_steps == 100


def test_checkpoints_the_trainer_deleted_are_no_longer_listed(sessions, tmp_path):
    from services.workers.progress import forget_pruned_checkpoints

    with sessions.begin() as session:
        project_id = ensure_project(session, "pruned").id
    job_id = _enqueue(sessions, project_id)
    _claim(sessions, "w", job_id)
    folders = [tmp_path / f"checkpoint-{step}" for step in (100, 200, 300)]
    for step, folder in zip((100, 200, 300), folders):
        folder.mkdir()
        queue.record_checkpoint(sessions, job_id, step, str(folder))

    forget_pruned_checkpoints(sessions, job_id, str(tmp_path / "not-mounted-here" / "checkpoint-400"))
    assert len(queue.checkpoint_paths(sessions, job_id)) == 3  # storage this process cannot see: keep all

    folders[0].rmdir()  # save_total_limit rotated it away
    newest = tmp_path / "checkpoint-400"
    newest.mkdir()
    queue.record_checkpoint(sessions, job_id, 400, str(newest))
    forget_pruned_checkpoints(sessions, job_id, str(newest))
    assert sorted(queue.checkpoint_paths(sessions, job_id)) == sorted(map(str, [*folders[1:], newest]))
    assert queue.latest_checkpoint(sessions, job_id).step == 400
