"""Single-worker CPU stages run on the dispatcher's warm worker: one process across jobs, CPUs reserved only
while a stage runs, a fresh process after a failed stage, cancel honoured while waiting for CPUs; the
timeline event says where start-up went."""

from __future__ import annotations

import time

import pytest
from workers_support import sft_body, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _run(client, body) -> tuple[dict, dict]:
    job = client.create_job(body)
    final = client.wait(job["id"], timeout_s=240)
    started = [event["data"] for event in client.events(job["id"]) if (event.get("data") or {}).get("pid")]
    return final, started[0]


def test_warm_worker_is_reused_holds_no_cpus_between_jobs_and_is_replaced_after_a_failure(
    sqlite_stack, uploaded, tiny_model_dir, tmp_path
):
    import ray

    client = sqlite_stack.client()
    good = sft_body(str(tiny_model_dir), uploaded["sft"], max_steps=3, save_steps=3)

    first, first_worker = _run(client, good)
    assert first["status"] == "succeeded", first["error"]
    assert first_worker["runner"] == "warm_worker" and first_worker["world_size"] == 1
    timeline = next(
        event["data"]["timeline"] for event in client.events(first["id"]) if (event.get("data") or {}).get("timeline")
    )
    assert 0 <= timeline["launched"] <= timeline["entered"] <= timeline["first_report"] <= timeline["run_returned"]
    # Between jobs the idle warm worker holds none of the cluster's CPUs.
    wait_for(
        lambda: ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"],
        30,
        "the stage's CPU reservation to be released",
    )

    second, second_worker = _run(client, good)
    assert second["status"] == "succeeded", second["error"]
    assert second_worker["pid"] == first_worker["pid"], "the second job ran in the same warm process"

    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": -3}')
    failed, failed_worker = _run(client, sft_body(str(broken), uploaded["sft"], max_steps=3, save_steps=3))
    assert failed["status"] == "failed" and failed_worker["pid"] == first_worker["pid"]

    after, after_worker = _run(client, good)
    assert after["status"] == "succeeded", after["error"]
    assert after_worker["pid"] != failed_worker["pid"], "a failed stage's process is not reused"


def test_job_waiting_for_cpus_the_cluster_lacks_is_cancelled_at_once(sqlite_stack, uploaded, tiny_model_dir):
    client = sqlite_stack.client()
    # 64 CPUs on the session's 2-CPU Ray: the stage's placement group can never be placed.
    body = {**sft_body(str(tiny_model_dir), uploaded["sft"], max_steps=3, save_steps=3), "cpus_per_worker": 64}
    job = client.create_job(body)
    wait_for(lambda: client.job(job["id"])["status"] == "running", 60, "the job to be claimed")

    asked = time.monotonic()
    client.action(job["id"], "cancel")
    final = client.wait(job["id"], timeout_s=30, poll_s=0.2)
    assert final["status"] == "cancelled"
    assert time.monotonic() - asked < 10
