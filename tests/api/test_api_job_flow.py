"""Chaining, pipelines, pause / resume / cancel and the dependency rules, through HTTP plus the queue."""

from __future__ import annotations

import json

from services.store import queue

SFT = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
PREF = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})
PROMPTS = json.dumps({"prompt": "p"})


def _upload(client, line: str) -> str:
    response = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("d.jsonl", line.encode())})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _run(server, worker: str, expected_job: str) -> str:
    claimed = queue.claim_next_job(server.sessions, worker, 30)
    assert claimed is not None and claimed.id == expected_job
    return queue.complete_job(server.sessions, claimed.id, worker, model_path=f"/models/{claimed.id}")


def test_pipeline_sft_rm_ppo_runs_in_order(server, project_key):
    with server.client(project_key) as client:
        sft, pref, prompts = _upload(client, SFT), _upload(client, PREF), _upload(client, PROMPTS)
        response = client.post("/v1/pipelines", json={
            "name": "rlhf", "model": "alignd-tiny", "suffix": "demo", "priority": 1000,
            "stages": [{"method": "supervised", "training_file": sft, "hyperparameters": {"n_epochs": 1}},
                       {"method": "reward_model", "training_file": pref},
                       {"method": "ppo", "training_file": prompts, "extensions": {"lora": True}}]})
        assert response.status_code == 200, response.text
        pipeline = response.json()
        sft_job, rm_job, ppo_job = pipeline["jobs"]
        assert pipeline["status"] == "queued" and pipeline["job_ids"] == [sft_job["id"], rm_job["id"], ppo_job["id"]]
        assert rm_job["depends_on"] == [sft_job["id"]] and set(ppo_job["depends_on"]) == {sft_job["id"], rm_job["id"]}
        assert ppo_job["spec"]["method"]["reward"]["model"].endswith(rm_job["id"])
        assert ppo_job["spec"]["model"]["name_or_path"].endswith(sft_job["id"])

        assert queue.claim_next_job(server.sessions, "w", 30).id == sft_job["id"]
        waiting = [client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] for job in (rm_job, ppo_job)]
        assert waiting == ["queued", "queued"]  # blocked on their inputs, so not claimed above
        model = queue.complete_job(server.sessions, sft_job["id"], "w", model_path="/models/sft")
        assert client.get(f"/v1/fine_tuning/jobs/{sft_job['id']}").json()["fine_tuned_model"] == model
        _run(server, "w", rm_job["id"])
        claimed = queue.claim_next_job(server.sessions, "w", 30)
        assert claimed.id == ppo_job["id"]
        assert set(claimed.input_models.values()) == {"/models/sft", f"/models/{rm_job['id']}"}
        queue.complete_job(server.sessions, claimed.id, "w", model_path="/models/ppo")
        done = client.get(f"/v1/pipelines/{pipeline['id']}").json()
        assert done["status"] == "succeeded"
        assert client.get("/v1/pipelines/pipe-missing").status_code == 404
        second = client.post("/v1/pipelines", json={
            "model": "alignd-tiny", "stages": [{"method": "supervised", "training_file": sft}]}).json()
        listed = client.get("/v1/pipelines", params={"limit": 1}).json()
        assert [p["id"] for p in listed["data"]] == [second["id"]] and listed["has_more"] is True
        assert listed["data"][0]["jobs"][0]["id"] == second["job_ids"][0]
        rest = client.get("/v1/pipelines", params={"limit": 1, "after": second["id"]}).json()
        assert [p["id"] for p in rest["data"]] == [pipeline["id"]] and rest["data"][0]["status"] == "succeeded"
        stale = client.get("/v1/pipelines", params={"after": "pipe-gone"})
        assert stale.status_code == 400 and stale.json()["error"]["param"] == "after"


def test_chained_job_waits_and_fails_with_its_input(server, project_key):
    with server.client(project_key) as client:
        sft, pref = _upload(client, SFT), _upload(client, PREF)
        first = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": sft,
                                                          "priority": 900}).json()
        second = client.post("/v1/fine_tuning/jobs", json={
            "model": first["id"], "training_file": pref, "priority": 900,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3, "n_epochs": "auto"}}}}).json()
        assert second["depends_on"] == [first["id"]] and second["spec"]["method"]["beta"] == 0.3
        claimed = queue.claim_next_job(server.sessions, "w2", 30)
        assert claimed.id == first["id"]
        assert queue.fail_job(server.sessions, claimed.id, "w2", "out of memory", retryable=False) == "failed"
        failed = client.get(f"/v1/fine_tuning/jobs/{second['id']}").json()
        assert failed["status"] == "failed" and failed["error"]["code"] == "dependency_failed"
        assert first["id"] in failed["error"]["message"]
        late = client.post("/v1/fine_tuning/jobs", json={"model": first["id"], "training_file": pref,
                                                         "method": {"type": "dpo"}})
        assert late.status_code == 400 and late.json()["error"]["code"] == "dependency_failed"


def test_pause_resume_cancel_running_job(server, project_key):
    with server.client(project_key) as client:
        sft = _upload(client, SFT)
        job = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": sft,
                                                        "priority": 999}).json()
        assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/pause").json()["status"] == "paused"
        assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/resume").json()["status"] == "queued"
        claimed = queue.claim_next_job(server.sessions, "w3", 30)
        assert claimed.id == job["id"]
        assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/pause").json()["pause_requested"] is True
        assert queue.renew_lease(server.sessions, job["id"], "w3", claimed.attempt).pause_requested
        queue.mark_paused(server.sessions, job["id"], "w3")
        assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "paused"
        client.post(f"/v1/fine_tuning/jobs/{job['id']}/resume")
        claimed = queue.claim_next_job(server.sessions, "w4", 30)
        assert claimed.id == job["id"] and claimed.attempt == 2
        assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["cancel_requested"] is True
        assert queue.renew_lease(server.sessions, job["id"], "w4", 2).cancel_requested
        queue.mark_cancelled(server.sessions, job["id"], "w4")
        final = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
        assert final["status"] == "cancelled"
        again = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
        messages = [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                                                     params={"limit": 100}).json()["data"]]
        assert messages[0] == "The job was cancelled" and "Pause requested" in messages


def test_succeeded_job_has_a_csv_results_file(server, project_key):
    with server.client(project_key) as client:
        job = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": _upload(client, SFT),
                                                        "priority": 1000}).json()
        assert job["result_files"] == []
        claimed = queue.claim_next_job(server.sessions, "w-results", 30)
        assert claimed.id == job["id"]
        queue.record_metrics(server.sessions, job["id"], 1, {"loss": 2.5, "learning_rate": 1e-4})
        queue.record_metrics(server.sessions, job["id"], 2, {"loss": 2.25, "eval_loss": 2.4, "train_loss": 2.3})
        assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["result_files"] == []  # running
        queue.complete_job(server.sessions, job["id"], "w-results", attempt=claimed.attempt)

        (file_id,) = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["result_files"]
        assert file_id in [row["result_files"][0] for row in client.get("/v1/fine_tuning/jobs").json()["data"]
                           if row["result_files"]]
        content = client.get(f"/v1/files/{file_id}/content")
        assert content.status_code == 200 and content.headers["content-type"].startswith("text/csv")
        # OpenAI's columns first (per-step train_loss, as OpenAI plots it; the trainer's end-of-run train_loss
        # average does not take its place), then ours.
        assert content.text == ("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,eval_loss,"
                                "learning_rate,loss\n1,2.5,,,,,0.0001,2.5\n2,2.25,,2.4,,2.4,,2.25\n")
        meta = client.get(f"/v1/files/{file_id}").json()
        assert meta["purpose"] == "fine-tune-results" and meta["bytes"] == len(content.content)
        assert meta["num_examples"] == 2 and meta["filename"] == "step_metrics.csv"
        refused = client.delete(f"/v1/files/{file_id}")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "results_file_not_deletable"
        assert client.get("/v1/files/file-results-000000000000000000000000/content").status_code == 404
    with server.client(server.admin_key) as other_project:
        assert other_project.get(f"/v1/files/{file_id}").status_code == 404
        assert other_project.get(f"/v1/files/{file_id}/content").status_code == 404


def test_creating_a_job_wakes_an_idle_dispatcher(server, project_key):
    import threading
    import time

    engine = server.app.state.alignd.engine
    if engine.dialect.name != "postgresql":  # SQLite has no LISTEN/NOTIFY: waiting is a plain sleep
        assert queue.wait_for_jobs(engine, timeout=0.05) is False
        return
    woken: list[bool] = []
    listener = threading.Thread(target=lambda: woken.append(queue.wait_for_jobs(engine, timeout=20)))
    listener.start()
    time.sleep(0.5)  # let it LISTEN
    with server.client(project_key) as client:
        started = time.monotonic()
        job = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": _upload(client, SFT)})
        assert job.status_code == 200, job.text
        client.post(f"/v1/fine_tuning/jobs/{job.json()['id']}/cancel")  # keep the shared queue clean
    listener.join(timeout=20)
    assert woken == [True] and time.monotonic() - started < 10


def test_a_model_field_takes_only_the_kind_of_model_it_loads(server, project_key):
    """A reward model scores and a policy generates: naming one job's output where the other is loaded would
    train (or score) with a randomly initialised head, so it is refused at create, naming the field."""
    with server.client(project_key) as client:
        sft_file, pref, prompts = _upload(client, SFT), _upload(client, PREF), _upload(client, PROMPTS)
        sft = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "training_file": sft_file}).json()
        reward_model = client.post("/v1/fine_tuning/jobs", json={
            "model": sft["id"], "training_file": pref, "method": {"type": "reward_model"}})
        assert reward_model.status_code == 200, reward_model.text  # a reward model starts from the SFT model
        reward_model = reward_model.json()

        refused = [
            (client.post("/v1/fine_tuning/jobs", json={
                "model": sft["id"], "training_file": prompts,
                "method": {"type": "ppo", "ppo": {"reward_model": sft["id"]}}}), "method.ppo.reward_model"),
            (client.post("/v1/fine_tuning/jobs", json={
                "model": sft["id"], "training_file": prompts,
                "method": {"type": "ppo", "ppo": {"reward": {"type": "model", "model": sft["id"]}}}}),
             "method.ppo.reward.model"),
            (client.post("/v1/fine_tuning/jobs", json={"model": reward_model["id"], "training_file": sft_file}),
             "model"),
        ]
        for response, param in refused:
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == param and error["code"] == "wrong_model_kind", error
        accepted = client.post("/v1/fine_tuning/jobs", json={
            "model": sft["id"], "training_file": prompts,
            "method": {"type": "ppo", "ppo": {"reward_model": reward_model["id"]}}})
        assert accepted.status_code == 200, accepted.text
        assert set(accepted.json()["depends_on"]) == {sft["id"], reward_model["id"]}
        again = client.post("/v1/fine_tuning/jobs", json={
            "model": reward_model["id"], "training_file": pref, "method": {"type": "reward_model"}})
        assert again.status_code == 200, again.text  # a reward model may go on from another one
