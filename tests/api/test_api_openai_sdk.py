"""The unmodified openai SDK against the real alignd server (SQLite and Postgres)."""

from __future__ import annotations

import openai
import pytest

from services.store import queue


@pytest.fixture()
def sdk(server, project_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=project_key, max_retries=0)


def test_upload_create_list_retrieve_cancel_events(sdk, demo_files):
    uploaded = sdk.files.create(file=demo_files["sft"].open("rb"), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.status == "processed"
    assert uploaded.bytes == demo_files["sft"].stat().st_size
    assert sdk.files.retrieve(uploaded.id).filename == "sft.jsonl"
    assert sdk.files.content(uploaded.id).read() == demo_files["sft"].read_bytes()
    # A filename that is not latin-1 still downloads: the header carries it RFC 6266-encoded.
    name = "données_训练 v1.jsonl"
    unicode_named = sdk.files.create(file=(name, demo_files["sft"].read_bytes()), purpose="fine-tune")
    assert sdk.files.retrieve(unicode_named.id).filename == name
    download = sdk.files.with_raw_response.content(unicode_named.id)
    assert download.content == demo_files["sft"].read_bytes()
    assert "filename*=UTF-8''donn%C3%A9es_" in download.headers["content-disposition"]

    created = [
        sdk.fine_tuning.jobs.create(
            model="alignd-tiny", training_file=uploaded.id, suffix=f"s{i}", seed=7 + i,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4,
                                                                              "learning_rate_multiplier": 2}}},
            metadata={"team": "nlp" if i % 2 else "rl"},
            extra_body={"lora": {"r": 8}, "max_length": 128, "max_prompt_length": 64, "zero_stage": 0},
        )
        for i in range(5)
    ]
    first = created[0]
    assert first.status == "queued" and first.seed == 7
    assert first.hyperparameters.n_epochs == 2 and first.hyperparameters.batch_size == 4
    spec = first.model_extra["spec"]
    assert spec["model"]["lora"]["r"] == 8 and spec["data"]["max_length"] == 128
    assert spec["training"]["learning_rate"] == pytest.approx(2 * 2e-4)  # LoRA SFT preset x multiplier

    page1 = sdk.fine_tuning.jobs.list(limit=2)
    assert [job.id for job in page1.data] == [created[4].id, created[3].id] and page1.has_more
    everything = [job.id for job in sdk.fine_tuning.jobs.list(limit=2)]
    assert everything[:5] == [job.id for job in reversed(created)]
    assert sdk.fine_tuning.jobs.retrieve(first.id).id == first.id
    nlp = sdk.fine_tuning.jobs.list(metadata={"team": "nlp"}, limit=100)
    assert {job.id for job in nlp.data} == {created[1].id, created[3].id}

    cancelled = sdk.fine_tuning.jobs.cancel(first.id)
    assert cancelled.status == "cancelled"
    events = sdk.fine_tuning.jobs.list_events(first.id, limit=1)
    assert events.data[0].message == "The job was cancelled" and events.has_more
    messages = [event.message for event in sdk.fine_tuning.jobs.list_events(first.id, limit=1)]
    assert messages[-1].startswith("Created fine-tuning job") and len(messages) == 2
    with pytest.raises(openai.NotFoundError):
        sdk.fine_tuning.jobs.retrieve("ftjob-doesnotexist")


def test_worker_progress_is_visible_through_the_sdk(server, sdk, demo_files):
    uploaded = sdk.files.create(file=demo_files["sft"].open("rb"), purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(model="alignd-tiny", training_file=uploaded.id, extra_body={"priority": 1000})
    claimed = queue.claim_next_job(server.sessions, "test-worker", 30)
    assert claimed.id == job.id and claimed.attempt == 1
    assert claimed.input_files[uploaded.id].endswith(f"{uploaded.id}.jsonl")
    for step in (1, 2, 3):
        queue.record_metrics(server.sessions, job.id, step, {"loss": 3.0 / step, "learning_rate": 1e-4})
    queue.record_metrics(server.sessions, job.id, 3, {"eval_loss": 1.5})
    queue.record_checkpoint(server.sessions, job.id, 2, "/ckpt/2", {"loss": 1.5})
    queue.record_checkpoint(server.sessions, job.id, 3, "/ckpt/3", {
        "loss": 1.0, "mean_token_accuracy": 0.5, "eval_loss": 1.25, "eval_mean_token_accuracy": 0.4, "grad_norm": 2.0})
    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "running"
    model_folder = server.storage_dir / "jobs" / job.id / "model"
    model_folder.mkdir(parents=True)
    (model_folder / "config.json").write_text("{}")
    model_id = queue.complete_job(server.sessions, job.id, "test-worker", result={"final_loss": 1.0},
                                  trained_tokens=1234, model_path=str(model_folder))

    done = sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model == model_id and done.trained_tokens == 1234
    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [3, 2]
    assert checkpoints.data[0].fine_tuned_model_checkpoint.endswith(":ckpt-step-3")
    # OpenAI's metric names are filled from the trainer's; our own names stay as extra keys.
    metrics = checkpoints.data[0].metrics
    assert (metrics.step, metrics.train_loss, metrics.train_mean_token_accuracy) == (3, 1.0, 0.5)
    assert (metrics.valid_loss, metrics.valid_mean_token_accuracy) == (1.25, 0.4)
    assert (metrics.full_valid_loss, metrics.full_valid_mean_token_accuracy) == (1.25, 0.4)
    assert metrics.model_extra["grad_norm"] == 2.0 and metrics.model_extra["eval_loss"] == 1.25
    earlier = checkpoints.data[1].metrics
    assert earlier.train_loss == 1.5 and earlier.valid_loss is None and earlier.full_valid_mean_token_accuracy is None
    with server.client(sdk.api_key) as client:
        metrics = client.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"after_step": 1, "limit": 1}).json()
        assert metrics["object"] == "list" and metrics["has_more"] is True
        assert metrics["data"] == [{"object": "fine_tuning.job.metric", "step": 2,
                                    "metrics": {"loss": 1.5, "learning_rate": 1e-4},
                                    "created_at": metrics["data"][0]["created_at"]}]
        last = client.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"after_step": 2}).json()
        assert last["data"][0]["metrics"] == {"loss": 1.0, "learning_rate": 1e-4, "eval_loss": 1.5}
    # The results file, as OpenAI clients fetch it: the job names it, files.content returns the CSV.
    (results_id,) = done.result_files
    assert sdk.files.retrieve(results_id).purpose == "fine-tune-results"
    csv_lines = sdk.files.content(results_id).text.splitlines()
    assert csv_lines[0] == ("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,"  # OpenAI's first
                            "eval_loss,learning_rate,loss")
    assert csv_lines[3] == "3,1.0,,1.5,,1.5,0.0001,1.0"
    models = [model.id for model in sdk.models.list()]
    assert "alignd-tiny" in models and model_id in models
    assert sdk.models.retrieve(model_id).id == model_id

    # Deleting the fine-tuned model: refused while an unfinished job uses it, then its name stops resolving.
    follow_up = sdk.fine_tuning.jobs.create(model=model_id, training_file=uploaded.id)
    with pytest.raises(openai.ConflictError, match=follow_up.id):
        sdk.models.delete(model_id)
    sdk.fine_tuning.jobs.cancel(follow_up.id)
    deleted = sdk.models.delete(model_id)
    assert (deleted.id, deleted.deleted) == (model_id, True) and not model_folder.exists()
    assert model_id not in [model.id for model in sdk.models.list()]
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve(model_id)
    with pytest.raises(openai.NotFoundError):
        sdk.models.delete(model_id)
    with pytest.raises(openai.BadRequestError, match="was deleted"):
        sdk.fine_tuning.jobs.create(model=model_id, training_file=uploaded.id)
    with pytest.raises(openai.BadRequestError, match="cannot be deleted"):
        sdk.models.delete("alignd-tiny")


def test_hyperparameters_block_reads_as_the_sdk_types_it(sdk, demo_files):
    """n_epochs is `int | "auto"` in the SDK: an integral spec value shows as an int; RPO's sft_weight shows on DPO."""
    pairs = sdk.files.create(file=demo_files["openai_dpo"].open("rb"), purpose="fine-tune")
    sft = sdk.files.create(file=demo_files["sft"].open("rb"), purpose="fine-tune")
    rpo = sdk.fine_tuning.jobs.create(model="alignd-tiny", training_file=pairs.id, method={
        "type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 3, "beta": 0.2, "sft_weight": 1.0}}})
    plain = sdk.fine_tuning.jobs.create(model="alignd-tiny", training_file=pairs.id, method={"type": "dpo"})
    # n_epochs itself takes a whole number (the SDK's type); a fraction goes through the spec extension.
    half = sdk.fine_tuning.jobs.create(model="alignd-tiny", training_file=sft.id, method={"type": "supervised"},
                                       extra_body={"spec": {"training": {"epochs": 1.5}}})
    # The raw JSON: the SDK's model would turn 3.0 into 3 itself, hiding what other clients read.
    page = sdk.fine_tuning.jobs.with_raw_response.list(limit=3).http_response.json()
    listed = {job["id"]: job for job in page["data"]}
    retrieved = sdk.fine_tuning.jobs.with_raw_response.retrieve(rpo.id).http_response.json()
    for job in (retrieved, listed[rpo.id]):
        for block in (job["hyperparameters"], job["method"]["dpo"]["hyperparameters"]):
            assert type(block["n_epochs"]) is int and block["n_epochs"] == 3
            assert block["beta"] == 0.2 and block["sft_weight"] == 1.0
    assert rpo.method.dpo.hyperparameters.model_extra["sft_weight"] == 1.0
    assert type(listed[plain.id]["hyperparameters"]["n_epochs"]) is int
    assert "sft_weight" not in listed[plain.id]["method"]["dpo"]["hyperparameters"]
    assert listed[half.id]["hyperparameters"]["n_epochs"] == 1.5  # a fraction stays a fraction


def test_results_files_are_listed_with_the_uploads(server, demo_files):
    """OpenAI's GET /v1/files lists a job's results files too; pages, order and purpose filter span both kinds."""
    with server.client(server.admin_key) as admin:
        project = admin.post("/v1/projects", json={"name": "results-listing"}).json()
        key = admin.post(f"/v1/projects/{project['id']}/api_keys", json={"name": "tests"}).json()["key"]
    sdk = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
    newest_last = [sdk.files.create(file=demo_files["sft"].open("rb"), purpose="fine-tune").id]
    for step in (1, 2):
        job = sdk.fine_tuning.jobs.create(model="alignd-tiny", training_file=newest_last[0],
                                          extra_body={"priority": 1000})
        assert queue.claim_next_job(server.sessions, "test-worker", 30).id == job.id
        queue.record_metrics(server.sessions, job.id, step, {"loss": 1.0 / step})
        queue.complete_job(server.sessions, job.id, "test-worker")
        (results_id,) = sdk.fine_tuning.jobs.retrieve(job.id).result_files
        newest_last += [results_id, sdk.files.create(file=demo_files["sft"].open("rb"), purpose="fine-tune").id]

    first = sdk.files.list(limit=2)
    assert [f.id for f in first.data] == newest_last[:-3:-1] and first.has_more
    assert [f.id for f in sdk.files.list(limit=2)] == newest_last[::-1]  # the SDK follows `after` page by page
    assert [f.id for f in sdk.files.list(limit=2, order="asc")] == newest_last
    assert [f.id for f in sdk.files.list(after=newest_last[3], limit=10)] == newest_last[2::-1]
    results = sdk.files.list(purpose="fine-tune-results", limit=1)
    assert [f.id for f in results] == [newest_last[3], newest_last[1]]
    assert [f.id for f in sdk.files.list(purpose="fine-tune")] == newest_last[::-2]
    listed = results.data[0]
    assert listed.purpose == "fine-tune-results" and listed.filename == "step_metrics.csv"
    assert listed.model_dump() == sdk.files.retrieve(listed.id).model_dump()
    assert listed.bytes == len(sdk.files.content(listed.id).content)
