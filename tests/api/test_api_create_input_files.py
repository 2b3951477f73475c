"""Create checks its input files again once their formats are known: the insert itself must find them.

After a file's first use its format comes from memory and only its existence is left to the job's insert (one
round trip fewer a create); a file deleted since must still answer the same 400, naming the same field, and leave
no job behind.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from services.store import queue
from services.store.engine import make_engine, make_session_factory
from services.store.models import File, Job

SFT = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
PREF = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})


def _upload(client, line: str) -> str:
    response = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("d.jsonl", line.encode())})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _job_count(client) -> int:
    return len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"])


def test_deleted_training_file_is_refused_after_its_format_was_learned(server, project_key):
    with server.client(project_key) as client:
        file_id = _upload(client, SFT)
        for _ in range(2):  # the first create looks the file up; the second leaves the check to the insert
            created = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": file_id})
            assert created.status_code == 200, created.text
        events = client.get(f"/v1/fine_tuning/jobs/{created.json()['id']}/events").json()["data"]
        assert [event["message"] for event in events] == [f"Created fine-tuning job: {created.json()['id']}; queued"]
        before = _job_count(client)

        assert client.delete(f"/v1/files/{file_id}").status_code == 200
        refused = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": file_id})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == {"message": f"training_file: no file '{file_id}' in this project",
                                           "type": "invalid_request_error", "param": "training_file",
                                           "code": "file_not_found"}
        assert _job_count(client) == before


def test_deleted_validation_file_is_named_when_the_training_file_is_fine(server, project_key):
    with server.client(project_key) as client:
        train, validation = _upload(client, SFT), _upload(client, SFT)
        body = {"model": "alignd-tiny", "training_file": train, "validation_file": validation}
        for _ in range(2):
            assert client.post("/v1/fine_tuning/jobs", json=body).status_code == 200
        before = _job_count(client)

        assert client.delete(f"/v1/files/{validation}").status_code == 200
        refused = client.post("/v1/fine_tuning/jobs", json=body)
        assert refused.status_code == 400, refused.text
        assert (refused.json()["error"]["param"], refused.json()["error"]["code"]) == ("validation_file",
                                                                                       "file_not_found")
        assert _job_count(client) == before
        # The training file alone is still fine.
        assert client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": train}
                           ).status_code == 200


def test_known_format_that_does_not_suit_the_method_is_still_refused(server, project_key):
    with server.client(project_key) as client:
        file_id = _upload(client, SFT)
        assert client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": file_id}
                           ).status_code == 200
        refused = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": file_id,
                                                            "method": {"type": "dpo"}})
        assert refused.status_code == 400, refused.text
        assert (refused.json()["error"]["param"], refused.json()["error"]["code"]) == ("training_file",
                                                                                       "unsuitable_file_format")
        # A deleted file of the wrong format: the missing file is the error, as when formats were looked up.
        assert client.delete(f"/v1/files/{file_id}").status_code == 200
        gone = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": file_id,
                                                         "method": {"type": "dpo"}})
        assert gone.json()["error"]["code"] == "file_not_found"


def test_another_projects_file_is_not_found_even_when_its_format_is_known(server, project_key):
    with server.client(server.admin_key) as admin, server.client(project_key) as client:
        file_id = _upload(admin, PREF)
        assert admin.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": file_id,
                                                        "method": {"type": "dpo"}}).status_code == 200
        refused = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": file_id,
                                                            "method": {"type": "dpo"}})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "file_not_found"


def test_enqueue_inserts_nothing_when_a_live_file_is_gone(queue_db):
    """The store's side, on both databases: the one-statement insert (Postgres) and the transaction (SQLite)."""
    sessions = make_session_factory(make_engine(queue_db))
    from services.store.projects import ensure_project

    with sessions.begin() as session:
        project_id = ensure_project(session, "live-files").id
        session.add(File(id="file-live", project_id=project_id, filename="d.jsonl", purpose="fine-tune", bytes=1,
                         sha256="0" * 64, storage_key="k", format="messages", num_examples=1, status="processed",
                         created_at=0.0, deleted=False))
        session.add(File(id="file-gone", project_id=project_id, filename="d.jsonl", purpose="fine-tune", bytes=1,
                         sha256="0" * 64, storage_key="k", format="messages", num_examples=1, status="processed",
                         created_at=0.0, deleted=True))

    def new_job(job_id: str, files: list[str]) -> queue.NewJob:
        return queue.NewJob(id=job_id, project_id=project_id, spec={"method": {"type": "supervised"}},
                            method="supervised", model="alignd-tiny", training_file=files[0], live_files=files)

    with sessions.begin() as session:
        assert queue.enqueue_job(session, new_job("ftjob-live", ["file-live"])).id == "ftjob-live"
    for files in (["file-gone"], ["file-live", "file-gone"], ["file-elsewhere"]):
        with sessions() as session:
            try:
                queue.enqueue_job(session, new_job("ftjob-refused", files))
            except queue.InputFileMissing:
                session.rollback()
            else:
                raise AssertionError(f"{files}: enqueued")
    with sessions() as session:
        assert session.execute(select(Job.id).where(Job.id == "ftjob-refused")).first() is None
