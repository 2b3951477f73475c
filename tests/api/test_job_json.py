"""A job's JSON as the API renders it from a stored row: spliced JSON columns stay valid JSON."""

from __future__ import annotations

import json

import pytest

from services.api.schemas import JobPublic, job_json, jobs_page_json
from services.store.jobs import PUBLIC_JOB_COLUMNS


def _row(**values) -> tuple:
    base = {"id": "ftjob-1", "created_at": 1.5, "finished_at": None, "model": "alignd-tiny",
            "fine_tuned_model": None, "project_id": "proj-1", "status": "succeeded", "training_file": "file-1",
            "validation_file": None, "method": "supervised", "trained_tokens": 7, "error": None, "seed": 3,
            "metadata_": '{"team": "nlp"}', "request": '{"integrations": null}', "suffix": None, "priority": 0,
            "attempts": 1, "max_attempts": 3, "depends_on": None, "pipeline_id": None, "cancel_requested": 0,
            "pause_requested": 0, "result": None, "package_versions": '{"torch": "2.13"}', "total_steps": 40,
            "estimated_finish": 1234.5, "started_at": 99.9,
            "spec": '{"method": {"type": "dpo", "beta": 0.2}, "training": {"epochs": 2.0, "batch_size": 4}}'}
    return tuple({**base, **values}[name] for name in PUBLIC_JOB_COLUMNS)


def test_stored_json_is_spliced_and_the_spec_fields_derived():
    job = json.loads(job_json(_row()))
    assert job["metadata"] == {"team": "nlp"} and job["package_versions"] == {"torch": "2.13"}
    assert job["depends_on"] == [] and job["error"] is None and job["integrations"] is None
    assert job["hyperparameters"]["n_epochs"] == 2 and job["hyperparameters"]["beta"] == 0.2
    assert job["method"] == {"type": "dpo", "dpo": {"hyperparameters": job["hyperparameters"]}}
    assert job["result_files"] == ["file-results-1"] and job["cancel_requested"] is False
    JobPublic.model_validate(job)  # every field the documented schema names
    assert job["total_steps"] == 40 and job["estimated_finish"] is None  # an estimate shows only while running
    assert job["started_at"] == 99 and job["created_at"] == 1
    assert json.loads(job_json(_row(status="running")))["estimated_finish"] == 1234


def test_nan_that_sqlite_stored_becomes_null():
    # Python's json writes NaN and Infinity, SQLite keeps them, and JSON has no such values.
    rendered = job_json(_row(result='{"train_loss": NaN, "best": Infinity, "steps": 3}'))
    job = json.loads(rendered, parse_constant=lambda name: pytest.fail(f"{name} in the response"))
    assert job["result"] == {"train_loss": None, "best": None, "steps": 3}


def test_a_listed_row_is_rendered_again_once_any_value_changed():
    # jobs_page_json remembers rows it rendered (clients list the same jobs again and again).
    queued, succeeded = _row(status="queued"), _row(status="succeeded", finished_at=9.0)
    for _ in range(2):
        page = json.loads(jobs_page_json([queued, succeeded], has_more=True))
        assert [job["status"] for job in page["data"]] == ["queued", "succeeded"] and page["has_more"] is True
        assert page["data"][0]["result_files"] == [] and page["data"][1]["result_files"] == ["file-results-1"]
        assert page["data"] == [json.loads(job_json(queued)), json.loads(job_json(succeeded))]
    renamed = json.loads(jobs_page_json([_row(status="queued", metadata_='{"team": "cv"}')], has_more=False))
    assert renamed["data"][0]["metadata"] == {"team": "cv"}
