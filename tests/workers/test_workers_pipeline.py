"""SFT -> DPO through the REST API on SQLite: live metrics while running, each stage feeding the next."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Long enough (a few seconds) that the dispatcher stores metrics while the stage still runs.
SFT_STEPS = 60


def test_sft_then_dpo_pipeline_through_rest(sqlite_stack, uploaded, tiny_model_dir: Path):
    client = sqlite_stack.client()
    short = {"max_length": 64, "max_prompt_length": 32}
    pipeline = client.create_pipeline(
        {
            "name": "workers-e2e",
            "model": str(tiny_model_dir),
            "stages": [
                {
                    "method": "supervised",
                    "training_file": uploaded["sft"],
                    "extensions": short,
                    "hyperparameters": {
                        "max_steps": SFT_STEPS,
                        "save_steps": SFT_STEPS // 2,
                        "batch_size": 8,
                        "learning_rate": 1e-3,
                    },
                },
                {
                    "method": {
                        "type": "dpo",
                        "dpo": {
                            "hyperparameters": {"max_steps": 6, "batch_size": 8, "learning_rate": 5e-4, "save_steps": 3}
                        },
                    },
                    "training_file": uploaded["openai_dpo"],
                    "validation_file": uploaded["eval"],
                    "extensions": {**short, "lora": {"r": 8}},
                },
            ],
        }
    )
    sft_id, dpo_id = pipeline["job_ids"]

    sft = client.wait(sft_id, timeout_s=240)
    assert sft["status"] == "succeeded", sft["error"]
    assert client.metrics(sft_id)[0]["metrics"]["loss"] > 0
    # Metrics reached the store while the stage ran, not only at the end: the dispatcher's timeline (a
    # short stage can end between two polls of a client, so the client cannot see this reliably).
    timeline = next(
        event["data"]["timeline"] for event in client.events(sft_id) if (event.get("data") or {}).get("timeline")
    )
    assert timeline["first_metric_stored"] < timeline["stage_returned"], timeline
    dpo = client.wait(dpo_id, timeout_s=240)
    assert dpo["status"] == "succeeded", dpo["error"]

    assert sft["result"]["steps"] == SFT_STEPS and dpo["result"]["steps"] == 6
    # The stages told their step counts while running (the dashboard's progress bar and an SDK client read them).
    assert (sft["total_steps"], dpo["total_steps"]) == (SFT_STEPS, 6)
    assert sft["estimated_finish"] is None  # finished: OpenAI's object has no estimate then
    assert [row["step"] for row in client.metrics(sft_id)][-1] == SFT_STEPS
    assert len(client.checkpoints(sft_id)) >= 2
    # The DPO stage trained on the SFT stage's registered output, not on the base model.
    sft_model = client.model(sft["fine_tuned_model"])
    assert sft_model["path"] == sft["result"]["model_dir"] and Path(sft_model["path"]).is_dir()
    assert dpo["result"]["input_model"] == sft_model["path"]
    assert dpo["result"]["eval_metrics"], "DPO evaluated on the validation file"
