"""No-op jobs enqueue -> claim -> complete on Postgres: alignd's queue vs procrastinate, same run, same machine.

Usage: .venv/bin/python bench/queue/queue_throughput.py [--jobs 2000] [--batch 100] [--threads 10] [--rounds 2]
Each system gets its own fresh database and one worker process; times cover enqueue through the last completion.
The one-job cases run twice: claims and renewals without waiting for the WAL flush (the default) and durable; and
a single thread's claim and complete latencies are compared the same two ways, alternating every 100 jobs.
alignd runs three ways: batched claims (`claim_jobs(limit=batch)` + `complete_jobs`), one job per call in one
thread, and one job per call in `--threads` threads of one process (the shape of procrastinate's worker with
`concurrency`). Rounds alternate the systems so a change in machine load hits all of them; the median is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import threading
import time
from contextlib import contextmanager

import psycopg

from services.store import queue, queue_pg
from services.store.engine import make_engine, make_session_factory
from services.store.migrate import upgrade_database
from services.store.projects import ensure_project

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_database(prefix: str):
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_alignd(jobs: int, batch: int, threads: int = 1, relaxed_claims: bool = True) -> float:
    """Jobs per second through alignd's queue: `batch` jobs per claim, or one per claim in `threads` threads.

    `relaxed_claims=False` makes claims and renewals wait for the WAL flush too (as before queue_pg.RELAXED_CLAIMS).
    """
    queue_pg.RELAXED_CLAIMS = relaxed_claims
    with fresh_database("alignd_bench") as name:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        upgrade_database(url)
        engine = make_engine(url, pool_size=max(threads, 2))
        sessions = make_session_factory(engine)
        with sessions.begin() as session:
            project_id = ensure_project(session, "default").id
        done = [0] * threads

        def work(index: int) -> None:
            worker = f"bench-worker-{index}"
            while True:
                if batch == 1:
                    job = queue.claim_next_job(sessions, worker, lease_seconds=60)
                    if job is None:
                        return
                    queue.complete_job(sessions, job.id, worker, attempt=job.attempt)
                    done[index] += 1
                    continue
                claimed = queue.claim_jobs(sessions, worker, lease_seconds=60, limit=batch)
                if not claimed:
                    return
                done[index] += len(queue.complete_jobs(sessions, [job.id for job in claimed], worker))

        started = time.perf_counter()
        for offset in range(0, jobs, 1000):
            with sessions.begin() as session:
                queue.enqueue_jobs(session, [queue.NewJob(project_id=project_id, spec={"noop": True}, method="noop",
                                                          model="none") for _ in range(min(1000, jobs - offset))])
        workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        elapsed = time.perf_counter() - started
        engine.dispose()
        assert sum(done) == jobs, (done, jobs)
        return jobs / elapsed


def claim_latency_ab(rounds: int = 12, jobs: int = 100) -> dict[str, dict[str, float]]:
    """Median ms per claim_next_job and per complete_job in one thread, relaxed and durable claims alternating
    every `jobs` jobs on one database: a comparison that a shared machine's load swings cannot tilt."""
    with fresh_database("alignd_claim_ab") as name:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        upgrade_database(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with sessions.begin() as session:
            project_id = ensure_project(session, "default").id
        samples: dict[str, dict[str, list[float]]] = {mode: {"claim": [], "complete": []}
                                                      for mode in ("relaxed", "durable")}
        for _ in range(rounds):
            for mode in samples:
                queue_pg.RELAXED_CLAIMS = mode == "relaxed"
                with sessions.begin() as session:
                    queue.enqueue_jobs(session, [queue.NewJob(project_id=project_id, spec={"noop": True},
                                                              method="noop", model="none") for _ in range(jobs)])
                claim_s = complete_s = 0.0
                for _ in range(jobs):
                    started = time.perf_counter()
                    job = queue.claim_next_job(sessions, "ab-worker", lease_seconds=60)
                    claimed = time.perf_counter()
                    queue.complete_job(sessions, job.id, "ab-worker", attempt=job.attempt)
                    claim_s, complete_s = claim_s + claimed - started, complete_s + time.perf_counter() - claimed
                samples[mode]["claim"].append(claim_s / jobs * 1000)
                samples[mode]["complete"].append(complete_s / jobs * 1000)
        engine.dispose()
    queue_pg.RELAXED_CLAIMS = True
    return {mode: {f"{name}_ms": round(statistics.median(values), 3) for name, values in times.items()}
            for mode, times in samples.items()}


def run_procrastinate(jobs: int, concurrency: int) -> float:
    """Jobs per second through procrastinate: batch defer, then one worker until the queue is empty."""
    import procrastinate

    with fresh_database("procrastinate_bench") as name:
        conninfo = f"postgresql://postgres@127.0.0.1:5432/{name}"

        async def main() -> float:
            app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
            done = 0

            @app.task(name="noop")
            async def noop() -> None:
                nonlocal done
                done += 1

            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                started = time.perf_counter()
                for offset in range(0, jobs, 1000):
                    await noop.batch_defer_async(*({} for _ in range(min(1000, jobs - offset))))
                await app.run_worker_async(wait=False, concurrency=concurrency, install_signal_handlers=False,
                                           listen_notify=False, fetch_job_polling_interval=0.01)
                elapsed = time.perf_counter() - started
            assert done == jobs, (done, jobs)
            return jobs / elapsed

        return asyncio.run(main())


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=10, help="alignd one-job-per-call worker threads")
    parser.add_argument("--concurrency", type=int, default=10, help="procrastinate worker concurrency")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cases = {
        f"alignd_batch{args.batch}": lambda: run_alignd(args.jobs, args.batch),
        "alignd_single_1thread": lambda: run_alignd(args.jobs, 1),
        "alignd_single_1thread_durable_claims": lambda: run_alignd(args.jobs, 1, relaxed_claims=False),
        f"alignd_single_{args.threads}threads": lambda: run_alignd(args.jobs, 1, threads=args.threads),
        f"alignd_single_{args.threads}threads_durable_claims": lambda: run_alignd(args.jobs, 1, threads=args.threads,
                                                                                 relaxed_claims=False),
        f"procrastinate_c{args.concurrency}": lambda: run_procrastinate(args.jobs, args.concurrency),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    loads = [load_average()]
    for _ in range(args.rounds):
        for name, case in cases.items():
            samples[name].append(round(case(), 1))
            loads.append(load_average())
    rates = {name: statistics.median(values) for name, values in samples.items()}
    claim_ab = claim_latency_ab()
    procrastinate_rate = rates[f"procrastinate_c{args.concurrency}"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({
        "jobs": args.jobs, "commit": commit, "load_average_1min": loads,
        "jobs_per_s_median": rates, "samples": samples,
        "ratio_vs_procrastinate": {name: round(rate / procrastinate_rate, 2) for name, rate in rates.items()},
        "single_thread_claim_complete_ab": claim_ab,
    }, indent=2))


if __name__ == "__main__":
    main()
