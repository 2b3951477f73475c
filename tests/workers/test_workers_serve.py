"""PPO with a reward model: the Ray Serve application exists while the stage runs (and answers POST /score),
and is gone afterwards."""

from __future__ import annotations

import httpx
import pytest
from workers_support import wait_for

from services.workers.reward_serving import SERVE_HTTP_HOST, SERVE_HTTP_PORT, reward_application_name

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Enough steps that the stage (and so its application) lives a few seconds on the warm worker, which
# starts it at once: the test must find the application and reach it over HTTP while it runs.
PPO_STEPS = 24


def serve_applications() -> set[str]:
    from ray import serve

    try:
        return set(serve.status().applications)
    except Exception:  # noqa: BLE001 - Serve not started yet in this cluster
        return set()


def test_reward_model_served_during_ppo_and_deleted_after(sqlite_stack, uploaded, tiny_model_dir):
    client = sqlite_stack.client()
    # The tiny model with a fresh one-logit head is a (poor but real) reward model: enough to test serving.
    job = client.create_job(
        {
            "model": str(tiny_model_dir),
            "training_file": uploaded["prompts"],
            "method": {
                "type": "ppo",
                "ppo": {
                    "reward_model": str(tiny_model_dir),
                    "hyperparameters": {
                        "max_steps": PPO_STEPS,
                        "rollout_batch_size": 8,
                        "mini_batch_size": 4,
                        "batch_size": 4,
                        "max_new_tokens": 8,
                        "ppo_epochs": 1,
                        "save_steps": PPO_STEPS // 2,
                    },
                },
            },
            "max_length": 64,
            "max_prompt_length": 32,
        }
    )
    name = reward_application_name(job["id"])

    wait_for(
        lambda: name in serve_applications() or client.job(job["id"])["status"] in ("succeeded", "failed"),
        240,
        "the reward application to be deployed",
    )
    assert name in serve_applications(), client.job(job["id"])

    def score_over_http() -> httpx.Response | None:
        # The HTTP proxy learns a new application's route a moment after serve.status lists it.
        response = httpx.post(
            f"http://{SERVE_HTTP_HOST}:{SERVE_HTTP_PORT}/{name}/score",
            json={"prompts": ["Sort the letters: b a", "Sort the letters: c a"], "completions": ["a b", "c a"]},
            timeout=30,
        )
        return response if response.status_code != 404 else None

    response = wait_for(score_over_http, 30, "the application's HTTP route", poll_s=0.1)
    assert response.status_code == 200, response.text
    assert len(response.json()["scores"]) == 2

    final = client.wait(job["id"], timeout_s=300)
    assert final["status"] == "succeeded", final["error"]
    assert final["result"]["steps"] == PPO_STEPS
    assert any("reward_mean" in row["metrics"] for row in client.metrics(job["id"]))
    assert name not in serve_applications(), "the Serve application outlived its stage"
    events = [event["message"] for event in client.events(job["id"])]
    assert any(name in message for message in events)
