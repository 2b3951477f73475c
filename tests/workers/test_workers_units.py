"""The workers' small pure parts: spec resolution for pipelines, error descriptions, the embedded admin key."""

from __future__ import annotations

import os
import stat

import pytest

from services.workers.embedded import admin_key_for
from services.workers.launcher import describe_error, worker_lost
from services.workers.pipeline import InputNotReady, resolve_spec, reward_model_to_serve

BASE_SPEC = {
    "method": {"type": "dpo"},
    "model": {"name_or_path": "ft:alignd-tiny:ftjob-1"},
    "data": {"train_files": ["file-abc"], "eval_files": ["/data/eval.jsonl"]},
}


def test_resolve_spec_maps_file_ids_and_fine_tuned_models_to_paths():
    spec = resolve_spec(
        BASE_SPEC,
        {"file-abc": "files/file-abc.jsonl"},
        {"ft:alignd-tiny:ftjob-1": "/s/m1"},
        lambda key: f"/storage/{key}",
        lambda name: None,
    )
    assert spec.model.name_or_path == "/s/m1"
    assert spec.data.train_files == ["/storage/files/file-abc.jsonl"]
    assert spec.data.eval_files == ["/data/eval.jsonl"]
    assert BASE_SPEC["model"]["name_or_path"] == "ft:alignd-tiny:ftjob-1", "the stored spec is never changed"


def test_resolve_spec_names_the_field_of_a_missing_input():
    with pytest.raises(InputNotReady, match="model: 'ft:alignd-tiny:ftjob-1'"):
        resolve_spec(BASE_SPEC, {"file-abc": "k"}, {}, str, lambda name: None)
    with pytest.raises(InputNotReady, match="data.train_files: 'file-abc'"):
        resolve_spec(BASE_SPEC, {}, {"ft:alignd-tiny:ftjob-1": "/m"}, str, lambda name: None)


def test_ppo_reward_model_is_resolved_and_marked_for_serving():
    spec = {
        "method": {"type": "ppo", "reward": {"type": "model", "model": "ft:x:ftjob-rm"}},
        "model": {"name_or_path": "alignd-tiny"},
        "data": {"train_files": ["/p.jsonl"]},
    }
    resolved = resolve_spec(spec, {}, {"ft:x:ftjob-rm": "/s/rm"}, str, lambda name: None)
    assert resolved.method.reward.model == "/s/rm"
    assert resolved.model.name_or_path == "alignd-tiny"
    assert reward_model_to_serve(resolved)
    function_reward = {**spec, "method": {"type": "ppo", "reward": {"type": "function", "function": "demo_sort"}}}
    assert not reward_model_to_serve(resolve_spec(function_reward, {}, {}, str, lambda name: None))


def test_describe_error_gives_type_message_and_place():
    try:
        raise ValueError("training.learning_rate: loss became NaN at step 7")
    except ValueError as error:
        described = describe_error(error)
    assert described["type"] == "ValueError" and not described["retryable"]
    assert described["message"].startswith("ValueError: training.learning_rate: loss became NaN at step 7 (at ")
    assert describe_error(ConnectionError("reset"))["retryable"]


def test_a_lost_worker_and_a_broken_collective_are_retryable_a_stage_bug_is_not():
    import torch.distributed
    from ray.exceptions import ActorDiedError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
    from ray.train.v2.api.exceptions import WorkerGroupError

    # NCCL's errors are DistErrors; gloo's are RuntimeErrors raised from torch.distributed (checked end to end in
    # test_workers_worker_kill.py), a RuntimeError of the stage's own code is not.
    assert describe_error(torch.distributed.DistBackendError("NCCL communicator was aborted"))["retryable"]
    assert not describe_error(RuntimeError("shape mismatch"))["retryable"]

    died = WorkerHealthCheckFailedError("Worker health check failed", ActorDiedError())
    peer_error = RuntimeError("Connection reset by peer")
    assert "died" in worker_lost(WorkerGroupError("rank 0 lost", {0: died, 1: peer_error}))
    assert "died" in worker_lost(ActorDiedError())
    assert worker_lost(WorkerGroupError("rank 1 raised", {1: ValueError("hidden_size")})) is None
    assert worker_lost(None) is None


def test_admin_key_is_made_once_private_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGND_ADMIN_KEY", raising=False)
    key = admin_key_for(tmp_path)
    assert key.startswith("sk-alignd-") and admin_key_for(tmp_path) == key
    assert stat.S_IMODE(os.stat(tmp_path / "admin_key").st_mode) == 0o600
    monkeypatch.setenv("ALIGND_ADMIN_KEY", "from-env")
    assert admin_key_for(tmp_path) == "from-env"
