"""API latency: create-job and list-jobs p50 / p99 at 50 concurrent clients against `alignd serve` on 127.0.0.1.

Usage: .venv/bin/python -m bench.queue.api_latency [--requests 500] [--concurrency 50] [--workers 1] [--rate 2]
The server runs as a subprocess (uvicorn) on a fresh Postgres database; clients are httpx async. Two loads:
- closed loop: each of the 50 clients sends its next request as soon as the last one answered. This measures
  throughput; latency is then mostly time waiting in line (latency ~ clients / throughput, Little's law).
- paced: each of the 50 clients sends `--rate` requests per second at random offsets (an open loop, as 50
  users would); latency is then service time plus what the offered load makes wait.
Also reported: the server's own CPU time per request (from /proc), which does not depend on other load as much.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from bench.queue.queue_throughput import fresh_database, load_average

SFT_LINE = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the server processes so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def _server_pids(root: int) -> list[int]:
    """The server process and its children (uvicorn workers with --workers > 1)."""
    children = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True).stdout.split()
    return [root, *map(int, children)]


def _summary(latencies: list[float], elapsed: float, cpu: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000, 1),
            "requests_per_s": round(len(ordered) / elapsed, 1),
            "server_cpu_ms_per_request": round(cpu / len(ordered) * 1000, 2)}


async def _closed_loop(client: httpx.AsyncClient, requests: int, concurrency: int, make_request,
                       pids: list[int]) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            response = await make_request(client, index)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text

    cpu, started = _cpu_seconds(pids), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(latencies, time.perf_counter() - started, _cpu_seconds(pids) - cpu)


async def _paced(client: httpx.AsyncClient, seconds: float, concurrency: int, rate: float, make_request,
                 pids: list[int]) -> dict[str, float]:
    latencies: list[float] = []

    async def user(seed: int) -> None:
        rng = random.Random(seed)
        next_at = time.perf_counter() + rng.uniform(0, 1 / rate)
        end = time.perf_counter() + seconds
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            started = time.perf_counter()
            response = await make_request(client, seed)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            next_at += rng.expovariate(rate)  # Poisson arrivals; a late answer does not delay the schedule
            next_at = max(next_at, time.perf_counter())

    cpu, started = _cpu_seconds(pids), time.perf_counter()
    await asyncio.gather(*(user(index) for index in range(concurrency)))
    result = _summary(latencies, time.perf_counter() - started, _cpu_seconds(pids) - cpu)
    result["offered_requests_per_s"] = concurrency * rate
    return result


async def run(base_url: str, key: str, requests: int, concurrency: int, rate: float, seconds: float,
              pids: list[int]) -> dict[str, dict[str, float]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=120) as client:
        upload = await client.post("/v1/files", data={"purpose": "fine-tune"},
                                   files={"file": ("d.jsonl", (SFT_LINE + "\n").encode() * 10)})
        file_id = upload.json()["id"]
        body = {"model": "alignd-tiny", "training_file": file_id, "lora": True}

        async def create(http, _index):
            return await http.post("/v1/fine_tuning/jobs", json=body)

        async def list_jobs(http, _index):
            return await http.get("/v1/fine_tuning/jobs", params={"limit": 20})

        await _closed_loop(client, 100, concurrency, create, pids)  # warm-up: connections, caches, prepares
        results = {}
        for name, request in (("create_job", create), ("list_jobs", list_jobs)):
            results[f"{name}_closed_loop"] = await _closed_loop(client, requests, concurrency, request, pids)
            results[f"{name}_paced"] = await _paced(client, seconds, concurrency, rate, request, pids)
            results[f"{name}_paced"]["load_average_1min"] = load_average()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="requests per closed-loop phase")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0.4, help="requests per second per client when paced")
    parser.add_argument("--seconds", type=float, default=20, help="length of each paced phase")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    load_before = load_average()
    with fresh_database("alignd_api_bench") as name, tempfile.TemporaryDirectory() as home:
        port = _free_port()
        env = {**os.environ, "ALIGND_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
               "ALIGND_HOME": home, "ALIGND_ADMIN_KEY": "bench-admin-key", "ALIGND_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([sys.executable, "-m", "services.cli.main", "serve", "--port", str(port),
                                   "--workers", str(args.workers), "--log-level", "warning"], env=env)
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 120
            while True:
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("server did not become ready")
                time.sleep(0.2)
            results = asyncio.run(run(base_url, "bench-admin-key", args.requests, args.concurrency, args.rate,
                                      args.seconds, _server_pids(server.pid)))
        finally:
            server.terminate()
            server.wait(timeout=60)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"commit": commit, "concurrency": args.concurrency, "uvicorn_workers": args.workers,
                      "load_average_1min_before": load_before, "load_average_1min_after": load_average(),
                      **results}, indent=2))


if __name__ == "__main__":
    main()
