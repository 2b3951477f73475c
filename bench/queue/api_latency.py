"""API latency: create-job and list-jobs p50 / p99 at 50 concurrent clients against `alignd serve` on 127.0.0.1.

Usage: .venv/bin/python bench/queue/api_latency.py [--requests 1000] [--concurrency 50] [--workers 1]
The server runs as a subprocess (uvicorn) on a fresh Postgres database; clients are httpx async.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from bench.queue.queue_throughput import fresh_database

SFT_LINE = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1),
            "requests_per_s": None}


async def _load(client: httpx.AsyncClient, requests: int, concurrency: int, make_request) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            response = await make_request(client, index)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = _percentiles(latencies)
    result["requests_per_s"] = round(requests / (time.perf_counter() - started), 1)
    return result


async def run(base_url: str, key: str, requests: int, concurrency: int) -> dict[str, dict[str, float]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=60) as client:
        upload = await client.post("/v1/files", data={"purpose": "fine-tune"},
                                   files={"file": ("d.jsonl", (SFT_LINE + "\n").encode() * 10)})
        file_id = upload.json()["id"]
        body = {"model": "alignd-tiny", "training_file": file_id, "lora": True}

        async def create(http, _index):
            return await http.post("/v1/fine_tuning/jobs", json=body)

        async def list_jobs(http, _index):
            return await http.get("/v1/fine_tuning/jobs", params={"limit": 20})

        await _load(client, 100, concurrency, create)  # warm-up: connections, caches
        return {"create_job": await _load(client, requests, concurrency, create),
                "list_jobs": await _load(client, requests, concurrency, list_jobs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    with fresh_database("alignd_api_bench") as name, tempfile.TemporaryDirectory() as home:
        port = _free_port()
        env = {**os.environ, "ALIGND_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
               "ALIGND_HOME": home, "ALIGND_ADMIN_KEY": "bench-admin-key", "ALIGND_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([sys.executable, "-m", "services.cli.main", "serve", "--port", str(port),
                                   "--workers", str(args.workers), "--log-level", "warning"], env=env)
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("server did not become ready")
                time.sleep(0.2)
            results = asyncio.run(run(base_url, "bench-admin-key", args.requests, args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=20)
    print(json.dumps({"concurrency": args.concurrency, "requests": args.requests, "uvicorn_workers": args.workers,
                      **results}, indent=2))


if __name__ == "__main__":
    main()
