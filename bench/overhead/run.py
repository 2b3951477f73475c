"""Platform overhead: the same tiny-model SFT job run bare (`alignd train`) and submitted through the API.

Measures, for each path, the time from the user's action (process start / POST) to the first
optimizer step (first metrics row seen) and to the end (result written / job succeeded). The API
path runs against an embedded instance whose Ray cluster is warm (one small job ran before), once with
the dispatcher's warm worker (the default for a single-worker CPU stage) and once with every job a
Ray Train TorchTrainer.fit(); each API job also reports the dispatcher's timeline event.

    .venv/bin/python bench/overhead/run.py --max-steps 400 [--repeat 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def job_spec(train_file: str, max_steps: int) -> dict:
    return {
        "method": {"type": "supervised"},
        "model": {"name_or_path": "alignd-tiny"},
        "data": {"train_files": [train_file], "max_length": 64, "max_prompt_length": 32},
        "training": {
            "max_steps": max_steps,
            "learning_rate": 1e-3,
            "batch_size": 16,
            "logging_steps": 1,
            "save_steps": max(1, max_steps // 2),
        },
        "distribution": {"num_workers": 1, "cpus_per_worker": os.cpu_count() or 1},
    }


def run_bare(spec: dict, workdir: Path, env: dict) -> dict:
    """`alignd train` in a fresh process, as a user would run it."""
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / "bare.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    output = workdir / "bare-run"
    metrics = output / "metrics.jsonl"
    started = time.monotonic()
    process = subprocess.Popen(
        [
            str(REPO / ".venv/bin/alignd"),
            "train",
            str(spec_path),
            "--output-dir",
            str(output),
            "--no-demo-eval",
            "--no-resume",
        ],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first_step = None
    while process.poll() is None:
        if first_step is None and metrics.exists() and metrics.read_text().strip():
            first_step = time.monotonic() - started
        time.sleep(0.05)
    total = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"alignd train failed: {process.stderr.read().decode()[-2000:]}")
    steps = json.loads((output / "result.json").read_text())["steps"]
    return {"first_step_s": first_step, "total_s": total, "steps": steps}


def run_api_job(client: Any, body: dict) -> dict:
    """POST one job and poll it to the end: first metrics row and end, seconds after the POST, plus the
    dispatcher's timeline event (seconds after the claim)."""
    posted_at = time.time()
    started = time.monotonic()
    job = client.create_job(body)
    first_step = None
    while True:
        if first_step is None and client.metrics(job["id"]):
            first_step = time.monotonic() - started
        current = client.job(job["id"])
        if current["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    total = time.monotonic() - started
    if current["status"] != "succeeded":
        raise RuntimeError(f"API job {current['status']}: {current['error']}")
    events = client.events(job["id"])
    timeline = next((event["data"] for event in events if (event.get("data") or {}).get("timeline")), {})
    runner = next((event["data"].get("runner") for event in events if (event.get("data") or {}).get("pid")), None)
    return {
        "first_step_s": first_step,
        "total_s": total,
        "steps": current["result"]["steps"],
        "runner": runner,
        "dispatcher_wall_s": current["result"]["wall_time_s"],
        "post_to_claim_s": round(timeline["claimed_at"] - posted_at, 3) if timeline else None,
        "timeline_after_claim_s": timeline.get("timeline"),
    }


def start_instance(home: Path, train_path: Path, spec: dict, runners: list[str]) -> tuple[Any, Any, dict]:
    """An embedded instance, its client and the job body; one 2-step job per runner has run (warm cluster)."""
    from services.cli.demo import free_port
    from services.cli.rest_client import AligndClient
    from services.workers.embedded import EmbeddedAlignd

    instance = EmbeddedAlignd(home, port=free_port()).start()
    client = AligndClient(instance.url, instance.api_key)
    file_id = client.upload(train_path)
    body = {
        "model": "alignd-tiny",
        "training_file": file_id,
        "spec": {key: value for key, value in spec.items() if key not in ("model", "method")},
    }
    body["spec"]["data"] = {**spec["data"], "train_files": [file_id]}
    warm_body = {**body, "spec": {**body["spec"], "training": {**spec["training"], "max_steps": 2}}}
    for runner in runners:
        use_runner(instance, runner)
        client.wait(client.create_job(warm_body)["id"], timeout_s=600)
    return instance, client, body


def use_runner(instance: Any, runner: str) -> None:
    """'warm_worker': the default path of a single-worker CPU stage; 'ray_train': the same dispatcher with
    its warm pool set aside, so every job is a TorchTrainer.fit()."""
    dispatcher = instance.dispatcher
    if not hasattr(dispatcher, "bench_pool"):
        dispatcher.bench_pool = dispatcher.warm_pool
    dispatcher.warm_pool = dispatcher.bench_pool if runner == "warm_worker" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=1, help="Jobs per path (bare runs and API jobs per runner).")
    parser.add_argument(
        "--runners",
        default="warm_worker,ray_train",
        help="API paths to measure, comma-separated: warm_worker, ray_train.",
    )
    parser.add_argument("--markdown", action="store_true", help="Also print docs/benchmarks.md rows.")
    args = parser.parse_args()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll would drown the report
    from alignment_core.demo.task import write_demo_data

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="alignd-overhead-") as scratch:
        workdir = Path(scratch)
        home = workdir / "home"
        env = {
            **os.environ,
            "ALIGND_HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        os.environ.update(
            {
                key: env[key]
                for key in (
                    "ALIGND_HOME",
                    "HF_HUB_OFFLINE",
                    "TRANSFORMERS_OFFLINE",
                    "HF_DATASETS_OFFLINE",
                    "TOKENIZERS_PARALLELISM",
                )
            }
        )
        from alignment_core.modeling.tiny import resolve_model_path

        resolve_model_path("alignd-tiny")  # built once, outside both measurements
        train_path = write_demo_data(workdir / "data", seed=0)["sft"]
        spec = job_spec(str(train_path), args.max_steps)
        runners = args.runners.split(",")
        instance, client, body = start_instance(home, train_path, spec, runners)
        bare: list[dict] = []
        api: dict[str, list[dict]] = {runner: [] for runner in runners}
        try:
            # Interleaved, so a change in the shared machine's load hits every path alike.
            for round_number in range(args.repeat):
                bare.append(run_bare(spec, workdir / f"bare-{round_number}", env))
                for runner in runners:
                    use_runner(instance, runner)
                    api[runner].append(run_api_job(client, body))
                    if api[runner][-1]["runner"] != runner:
                        raise RuntimeError(f"asked for {runner}, the job ran on {api[runner][-1]['runner']}")
        finally:
            instance.stop()
    bare_first = statistics.median(run["first_step_s"] for run in bare)
    bare_total = statistics.median(run["total_s"] for run in bare)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "max_steps": args.max_steps,
        "bare": bare,
        "api": api,
        "overhead": {},
    }
    for runner, runs in api.items():
        first = statistics.median(run["first_step_s"] for run in runs)
        total = statistics.median(run["total_s"] for run in runs)
        report["overhead"][runner] = {
            "first_step_s": round(first - bare_first, 2),
            "total_pct": round(100 * (total - bare_total) / bare_total, 1),
        }
    print(json.dumps(report, indent=2))
    if args.markdown:
        for runner, runs in api.items():
            first = statistics.median(run["first_step_s"] for run in runs)
            total = statistics.median(run["total_s"] for run in runs)
            print(
                f"| {time.strftime('%Y-%m-%d')} | {runner} | {report['load_average_before_after']} | "
                f"{args.max_steps} | {bare_first:.1f} | {first:.1f} | {bare_total:.1f} | {total:.1f} | "
                f"{report['overhead'][runner]['total_pct']:+.1f}% |"
            )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
