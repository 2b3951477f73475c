"""DeepSpeed ZeRO-2 from the spec inside Ray Train workers: two CPU workers (gloo), through REST and the dispatcher.

Ray Train's torch backend sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT and opens the
gloo process group in every worker before the stage runs, so DeepSpeed joins that group instead of
looking for MPI. The train workers are separate processes, so DeepSpeed's global state never leaks
into the test process.
"""

from __future__ import annotations

import pytest
from workers_support import sft_body

pytestmark = [pytest.mark.ray, pytest.mark.deepspeed, pytest.mark.slow]

MAX_STEPS = 4


def test_sft_with_zero2_on_two_ray_workers(sqlite_stack, uploaded, tiny_model_dir):
    import ray

    client = sqlite_stack.client()
    body = sft_body(str(tiny_model_dir), uploaded["sft"], max_steps=MAX_STEPS, save_steps=2, batch_size=4)
    body.update({"zero_stage": 2, "num_workers": 2, "cpus_per_worker": 1, "max_examples": 32})
    job = client.create_job(body)

    final = client.wait(job["id"], timeout_s=240)

    assert final["status"] == "succeeded", final["error"]
    assert final["result"]["steps"] == MAX_STEPS and final["result"]["attempt"] == 1
    started = [event["data"] for event in client.events(job["id"]) if (event.get("data") or {}).get("world_size")]
    assert started and started[0]["world_size"] == 2, "both Ray Train workers ran the stage"
    losses = [row["metrics"]["loss"] for row in client.metrics(job["id"]) if "loss" in row["metrics"]]
    assert len(losses) == MAX_STEPS and all(loss == loss and loss > 0 for loss in losses)
    # The checkpoints are DeepSpeed's (per-rank ZeRO optimizer shards), saved in shared storage.
    newest = max(client.checkpoints(job["id"]), key=lambda row: row["step_number"])
    shards = list(
        sqlite_stack.storage_dir.glob(
            f"jobs/{job['id']}/attempt-1/checkpoints/checkpoint-{newest['step_number']}/**/*optim_states.pt"
        )
    )
    assert len(shards) == 2, f"expected a ZeRO optimizer shard per rank, found {shards}"
    # Both workers' CPUs are back once the job ended.
    assert ray.available_resources().get("CPU", 0) >= 2
