"""Malformed uploads and bodies: each answered 400 (or 413) naming the line or the field; nothing kept."""

from __future__ import annotations

import json

import pytest


def _upload(client, content: bytes, purpose: str = "fine-tune", filename: str = "data.jsonl"):
    return client.post("/v1/files", data={"purpose": purpose}, files={"file": (filename, content)})


GOOD_SFT = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
GOOD_PREF = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})

BAD_UPLOADS = [
    (GOOD_SFT + "\n{not json\n", "line 2"),
    (GOOD_SFT + "\n" + json.dumps({"messages": [{"role": "user", "content": "a"}]}) + "\n", "line 2"),
    (json.dumps({"messages": [{"role": "robot", "content": "a"}]}) + "\n", "line 1"),
    (GOOD_SFT + "\n" + GOOD_PREF + "\n", "line 2"),
    (json.dumps({"prompt": "p", "chosen": "c"}) + "\n", "rejected"),
    ("[1, 2]\n", "line 1"),
    ("\n\n", "no records"),
    (json.dumps({"instruction": "", "output": "x"}) + "\n", "instruction"),
]


@pytest.mark.parametrize(("content", "named"), BAD_UPLOADS)
def test_malformed_upload_names_the_problem_and_keeps_nothing(server, project_key, content, named):
    with server.client(project_key) as client:
        before = len(client.get("/v1/files").json()["data"])
        response = _upload(client, content.encode())
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert named in error["message"] and error["param"] == "file" and error["type"] == "invalid_request_error"
        assert len(client.get("/v1/files").json()["data"]) == before
    stored = list((server.storage_dir / "files").rglob("*")) if (server.storage_dir / "files").exists() else []
    assert all(path.is_dir() or path.stat().st_size > 0 for path in stored)


def test_upload_limits_and_form_errors(server, project_key):
    with server.client(project_key) as client:
        too_big = (GOOD_SFT + "\n").encode() * (server.app.state.alignd.settings.max_upload_bytes // 60 + 10)
        response = _upload(client, too_big)
        assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"
        response = _upload(client, GOOD_SFT.encode(), purpose="assistants")
        assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"
        response = client.post("/v1/files", data={"purpose": "fine-tune"})
        assert response.status_code == 400 and response.json()["error"]["param"] == "file"
        response = client.post("/v1/files", content=b"{}", headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert not list(server.storage_dir.parent.glob("alignd-upload-*"))


@pytest.fixture(scope="module")
def files(server, project_key) -> dict[str, str]:
    with server.client(project_key) as client:
        return {"sft": _upload(client, (GOOD_SFT + "\n").encode() * 4).json()["id"],
                "pref": _upload(client, (GOOD_PREF + "\n").encode() * 4).json()["id"]}


def _create(client, body):
    before = len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"])
    response = client.post("/v1/fine_tuning/jobs", json=body)
    queued = len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"]) - before
    return response, queued


BAD_BODIES = [
    ({"unknown_top": 1}, "unknown_top"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epoch": 2}}}},
     "method.supervised.hyperparameters.n_epoch"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": -1}}}},
     "method.supervised.hyperparameters.learning_rate_multiplier"),
    ({"method": {"type": "dpo"}}, "training_file"),  # SFT data cannot train DPO
    ({"method": {"type": "orpo"}}, "method.type"),
    ({"method": {"type": "kto"}}, "method.type"),
    ({"method": {"type": "grpo"}}, "method.type"),
    ({"method": {"type": "magic"}}, "method.type"),
    ({"method": {"type": "supervised", "dpo": {}}}, "method.dpo"),
    ({"method": {"type": "ppo", "ppo": {}}}, "method.ppo.reward"),
    ({"training_file": "file-nope"}, "training_file"),
    ({"validation_file": "file-nope"}, "validation_file"),
    ({"model": "ftjob-nope"}, "model"),
    ({"model": ""}, "model"),
    ({"quantization": {"bits": 4}}, "model"),  # QLoRA without LoRA
    ({"lora": {"r": 0}}, "lora.r"),
    ({"zero_stage": 5}, "zero_stage"),
    ({"spec": {"training": {"nonsense": True}}}, "spec.training.nonsense"),
    ({"seed": "abc"}, "seed"),
    ({"seed": 2**40}, "seed"),  # the trainers' generator takes 0 … 2**32 - 1: refused here, not at run time
    ({"seed": -1}, "seed"),
    ({"suffix": "my model/v1:x"}, "suffix"),  # it becomes a ':' field of the model name and part of a URL
    ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    # OpenAI's n_epochs / batch_size are whole numbers or "auto" (its SDK warns reading anything else back)
    ({"hyperparameters": {"n_epochs": 1.5}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": "3"}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": True}}, "hyperparameters.batch_size"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 2.5}}}},
     "method.supervised.hyperparameters.batch_size"),
]


@pytest.mark.parametrize(("patch", "param"), BAD_BODIES)
def test_malformed_job_body_is_400_naming_the_field(server, project_key, files, patch, param):
    body = {"model": "alignd-tiny", "training_file": files["sft"], **patch}
    with server.client(project_key) as client:
        before = len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"])
        response = client.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] is not None and error["param"].startswith(param), error
        assert set(error) == {"message", "type", "param", "code"}
        assert len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"]) == before


SENT_FIELDS = [
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 2}, "method": {"type": "supervised", "supervised": {
        "hyperparameters": {"n_epochs": 0}}}}, "method.supervised.hyperparameters.n_epochs"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0}}}},
     "method.supervised.hyperparameters.batch_size"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate": -1}}}},
     "method.supervised.hyperparameters.learning_rate"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}}, "method.dpo.hyperparameters.beta"),
    ({"method": {"type": "dpo", "dpo": {"beta": -1}}}, "method.dpo.beta"),
    ({"hyperparameters": {"beta": 99}, "method": {"type": "dpo"}}, "hyperparameters.beta"),
    ({"max_length": 0}, "max_length"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
      "spec": {"training": {"epochs": 0}}}, "spec.training.epochs"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}, "spec": {"method": {"beta": -1}}},
     "spec.method.beta"),
]


@pytest.mark.parametrize(("patch", "param"), SENT_FIELDS)
def test_a_spec_error_names_the_field_the_user_sent(server, project_key, files, patch, param):
    """The spec's own names (training.epochs) mean nothing to an OpenAI client that sent n_epochs."""
    with server.client(project_key) as client:
        response, queued = _create(client, {"model": "alignd-tiny", "training_file": files["sft"], **patch})
        assert response.status_code == 400 and queued == 0, response.text
        error = response.json()["error"]
        assert error["param"] == param and error["message"].startswith(f"{param}: "), error


def test_protocol_errors_keep_the_error_shape(server, project_key):
    with server.client(project_key) as client:
        for response, status in [
            (client.post("/v1/fine_tuning/jobs", content=b"{oops", headers={"content-type": "application/json"}), 400),
            (client.get("/v1/no/such/route"), 404),
            (client.post("/v1/fine_tuning/jobs", data={"model": "alignd-tiny"}), 400),  # form-encoded, not JSON
            (client.delete("/v1/fine_tuning/jobs"), 405),
            (client.get("/v1/fine_tuning/jobs", params={"limit": "many"}), 400),
            (client.get("/v1/fine_tuning/jobs", params={"status": "sleeping"}), 400),
            (client.get("/v1/fine_tuning/jobs", params={"after": "ftjob-bogus"}), 400),  # a stale cursor, not page 1
            (client.get("/v1/fine_tuning/jobs/ftjob-x/events", params={"after": "zzz"}), 404),
            (client.post("/v1/fine_tuning/jobs/ftjob-x/cancel"), 404),
        ]:
            assert response.status_code == status, response.text
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        form = client.post("/v1/fine_tuning/jobs", data={"model": "alignd-tiny"}).json()["error"]
        assert "Content-Type: application/json" in form["message"], form
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_a_gpu_job_that_cannot_fit_is_refused_before_queueing(server, project_key, files, tmp_path):
    """Admission control: a 70B-shaped model, fully fine-tuned on one 80 GB GPU, cannot fit."""
    from transformers import LlamaConfig

    big = tmp_path / "llama-70b-shape"
    LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=128256).save_pretrained(big)
    body = {"model": str(big), "training_file": files["sft"], "gpus_per_worker": 1}
    with server.client(project_key) as client:
        before = len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"])
        response = client.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "model_does_not_fit" and error["param"] == "model"
        assert "GiB" in error["message"] and "fit" in error["message"]
        assert len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"]) == before
        # Following the advice in the message (QLoRA with checkpointing) gets the job admitted.
        assert "it would fit as: QLoRA" in error["message"]
        body.update(lora={"r": 16}, quantization={"bits": 4}, spec={"model": {"gradient_checkpointing": True}})
        response = client.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text



@pytest.mark.parametrize("model", ["/no/such/model-folder", "./no-such-folder", "../no/such", "~/no-such-alignd-model",
                                   "does/not-exist-model", "not a hub id", "org/too/deep", "gpt-4o-mini-2024-07-18",
                                   __file__])
def test_a_model_that_cannot_load_is_refused_at_create(server, project_key, files, model):
    """The tests run with HF_HUB_OFFLINE=1: a hub id that is not in the cache cannot load either."""
    with server.client(project_key) as client:
        for body, param in [({"model": model}, "model"),
                            ({"method": {"type": "ppo", "ppo": {"reward_model": model}}}, "method.ppo.reward_model"),
                            ({"spec": {"model": {"name_or_path": model}}}, "spec.model.name_or_path")]:
            response, queued = _create(client, {"model": "alignd-tiny", "training_file": files["sft"], **body})
            assert response.status_code == 400 and queued == 0, response.text
            error = response.json()["error"]
            assert error["param"] == param and error["code"] == "model_not_found", error
            assert model in error["message"]
    if model == "does/not-exist-model":
        assert "offline" in error["message"]
    if model.startswith("gpt-"):  # said at once, online or not: an OpenAI user's first guess
        assert "OpenAI-hosted" in error["message"]


def test_model_names_that_can_load_are_accepted(server, project_key, files, tmp_path, monkeypatch):
    from huggingface_hub import constants

    (tmp_path / "local-model").mkdir()
    snapshot = tmp_path / "hub" / "models--org--cached-model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached-model" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached-model" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # the server runs in this process: a relative path resolves against tmp_path
    with server.client(project_key) as client:
        local = str(tmp_path / "local-model")
        cached = "org/cached-model"
        for model, carried in [("./local-model", local), ("local-model", local), (cached, cached)]:
            response, queued = _create(client, {"model": model, "training_file": files["sft"]})
            assert response.status_code == 200 and queued == 1, response.text
            assert response.json()["spec"]["model"]["name_or_path"] == carried
        # With the hub online the API does not call it (unbounded latency in a request): the worker's download tells.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        response, queued = _create(client, {"model": "does/not-exist-model", "training_file": files["sft"]})
        assert response.status_code == 200 and queued == 1, response.text


@pytest.mark.parametrize(("body", "param"), [
    ('"hyperparameters": {"learning_rate_multiplier": NaN}', "hyperparameters.learning_rate_multiplier"),
    ('"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": Infinity}}}', "method.dpo.hyperparameters.beta"),
    ('"spec": {"training": {"warmup_ratio": -Infinity}}', "spec.training.warmup_ratio"),
])
def test_nan_and_infinity_are_refused_naming_the_field(server, project_key, files, body, param):
    """Python's JSON parser reads NaN / Infinity; they are not JSON numbers and must not reach a bound check
    (which reported NaN as 'must be <= 1' under another field's name) or a loss."""
    raw = f'{{"model": "alignd-tiny", "training_file": "{files["sft"]}", {body}}}'
    with server.client(project_key) as client:
        before = len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"])
        response = client.post("/v1/fine_tuning/jobs", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and "finite" in error["message"], error
        assert len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"]) == before


def test_empty_and_oversized_bodies(server, project_key):
    with server.client(project_key) as client:
        empty = client.post("/v1/fine_tuning/jobs", headers={"content-type": "application/json"})
        assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"], empty.text

        # A body over 1 MiB is refused from its Content-Length, before it is read or parsed ...
        huge = client.post("/v1/fine_tuning/jobs", json={"model": "alignd-tiny", "metadata": {"k": "x" * 2_000_000}})
        assert huge.status_code == 413, huge.text
        assert huge.json()["error"]["code"] == "request_too_large"

        # ... and one sent in chunks (no Content-Length) once 1 MiB has arrived.
        def chunks():
            yield b'{"model": "alignd-tiny", "metadata": {"k": "'
            for _ in range(40):
                yield b"x" * 65536
            yield b'"}}'

        chunked = client.post("/v1/pipelines", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413, chunked.text
        assert set(chunked.json()["error"]) == {"message", "type", "param", "code"}
        assert client.get("/healthz").status_code == 200

        # Uploads keep their own, larger limit (2 MB on this test server).
        line = json.dumps({"messages": [{"role": "user", "content": "q" * 500}, {"role": "assistant", "content": "a"}]})
        upload = _upload(client, (line + "\n").encode() * 2600)  # 1.3 MB
        assert upload.status_code == 200, upload.text


def test_a_pipeline_error_names_list_positions_as_written(server, project_key, files):
    with server.client(project_key) as client:
        response = client.post("/v1/pipelines", json={"model": "alignd-tiny", "stages": [
            {"method": "supervised", "training_file": files["sft"], "epochs": 2}]})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "stages[0].epochs", response.json()


def test_a_reward_function_must_be_one_the_server_runs(server, project_key, monkeypatch):
    """Workers import and call a reward function: a project key names built-in or operator-allowed ones only."""
    from services.settings import get_settings

    with server.client(project_key) as client:
        prompts = _upload(client, b'{"prompt": "sort: c a b"}\n').json()["id"]

        def create(function: str, via_spec: bool = False):
            reward = {"type": "function", "function": function}
            method = {"type": "ppo", "ppo": {} if via_spec else {"reward": reward}}
            body = {"model": "alignd-tiny", "training_file": prompts, "method": method}
            if via_spec:
                body["spec"] = {"method": {"reward": reward}}
            return _create(client, body)

        for function, via_spec, param in [("os:system", False, "method.ppo.reward.function"),
                                          ("subprocess:run", True, "spec.method.reward.function")]:
            response, queued = create(function, via_spec)
            assert response.status_code == 403 and queued == 0, response.text
            error = response.json()["error"]
            assert error["param"] == param and error["code"] == "reward_function_not_allowed", error
            assert "demo_sort" in error["message"] and "ALIGND_REWARD_FUNCTIONS" in error["message"]
        assert create("demo_sort")[0].status_code == 200

        monkeypatch.setenv("ALIGND_REWARD_FUNCTIONS", "my_rewards.math:score, other:fn")
        get_settings.cache_clear()
        try:
            assert create("my_rewards.math:score")[0].status_code == 200
            assert create("my_rewards.math:other")[0].status_code == 403
        finally:
            monkeypatch.delenv("ALIGND_REWARD_FUNCTIONS")
            get_settings.cache_clear()


def test_a_checkpoint_name_as_model_is_refused_as_a_checkpoint(server, project_key, files):
    """The dashboard and the SDK show `fine_tuned_model_checkpoint` names; alignd cannot train from one yet."""
    with server.client(project_key) as client:
        response, queued = _create(client, {"model": "ft:alignd-tiny:ftjob-0123:ckpt-step-40",
                                            "training_file": files["sft"]})
        assert response.status_code == 400 and queued == 0, response.text
        error = response.json()["error"]
        assert error["param"] == "model" and error["code"] == "checkpoint_not_a_model", error
