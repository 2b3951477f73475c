"""Platform overhead: the same tiny-model SFT job run bare (`alignd train`) and submitted through the API.

Measures, for each path, the time from the user's action (process start / POST) to the first
optimizer step (first metrics row seen) and to the end (result written / job succeeded). The API
path runs against an embedded instance whose Ray cluster is warm (one small job ran before).

    .venv/bin/python bench/overhead/run.py --max-steps 400 [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def job_spec(train_file: str, max_steps: int) -> dict:
    return {
        "method": {"type": "supervised"},
        "model": {"name_or_path": "alignd-tiny"},
        "data": {"train_files": [train_file], "max_length": 64, "max_prompt_length": 32},
        "training": {"max_steps": max_steps, "learning_rate": 1e-3, "batch_size": 16, "logging_steps": 1,
                     "save_steps": max(1, max_steps // 2)},
        "distribution": {"num_workers": 1, "cpus_per_worker": os.cpu_count() or 1},
    }


def run_bare(spec: dict, workdir: Path, env: dict) -> dict:
    """`alignd train` in a fresh process, as a user would run it."""
    import yaml

    spec_path = workdir / "bare.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    output = workdir / "bare-run"
    metrics = output / "metrics.jsonl"
    started = time.monotonic()
    process = subprocess.Popen([str(REPO / ".venv/bin/alignd"), "train", str(spec_path), "--output-dir", str(output),
                                "--no-demo-eval", "--no-resume"], env=env, cwd=workdir,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def run_api(spec: dict, train_path: Path, home: Path) -> dict:
    """The same spec through POST /v1/fine_tuning/jobs on a warm embedded instance."""
    from services.cli.demo import free_port
    from services.cli.rest_client import AligndClient
    from services.workers.embedded import EmbeddedAlignd

    instance = EmbeddedAlignd(home, port=free_port()).start()
    try:
        client = AligndClient(instance.url, instance.api_key)
        file_id = client.upload(train_path)
        body = {"model": "alignd-tiny", "training_file": file_id,
                "spec": {key: value for key, value in spec.items() if key not in ("model", "method")}}
        body["spec"]["data"] = {**spec["data"], "train_files": [file_id]}
        warm = client.create_job({**body, "spec": {**body["spec"], "training": {**spec["training"], "max_steps": 2}}})
        client.wait(warm["id"], timeout_s=600)
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
        return {"first_step_s": first_step, "total_s": total, "steps": current["result"]["steps"],
                "dispatcher_wall_s": current["result"]["wall_time_s"]}
    finally:
        instance.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--markdown", action="store_true", help="Also print a docs/benchmarks.md row.")
    args = parser.parse_args()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll would drown the report
    from alignment_core.demo.task import write_demo_data

    with tempfile.TemporaryDirectory(prefix="alignd-overhead-") as scratch:
        workdir = Path(scratch)
        home = workdir / "home"
        env = {**os.environ, "ALIGND_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        os.environ.update({key: env[key] for key in ("ALIGND_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                      "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM")})
        from alignment_core.modeling.tiny import resolve_model_path

        resolve_model_path("alignd-tiny")  # built once, outside both measurements
        train_path = write_demo_data(workdir / "data", seed=0)["sft"]
        spec = job_spec(str(train_path), args.max_steps)
        bare = run_bare(spec, workdir, env)
        api = run_api(spec, train_path, home)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "max_steps": args.max_steps, "bare": bare, "api": api,
        "first_step_overhead_s": api["first_step_s"] - bare["first_step_s"],
        "total_overhead_pct": 100 * (api["total_s"] - bare["total_s"]) / bare["total_s"],
    }
    print(json.dumps(report, indent=2))
    if args.markdown:
        print(f"| {time.strftime('%Y-%m-%d')} | {report['machine']} | {args.max_steps} | "
              f"{bare['first_step_s']:.1f} | {api['first_step_s']:.1f} | {bare['total_s']:.1f} | "
              f"{api['total_s']:.1f} | {report['total_overhead_pct']:+.1f}% |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
