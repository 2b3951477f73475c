"""No-op jobs enqueue -> claim -> complete on Postgres: alignd's queue vs procrastinate, same run, same machine.

Usage: .venv/bin/python bench/queue/queue_throughput.py [--jobs 5000] [--batch 100]
Each system gets its own fresh database and one worker process; times cover enqueue through the last completion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from contextlib import contextmanager

import psycopg

from services.store import queue
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


def run_alignd(jobs: int, batch: int) -> float:
    """Jobs per second through alignd's queue, claiming `batch` jobs per transaction."""
    with fresh_database("alignd_bench") as name:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        upgrade_database(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with sessions.begin() as session:
            project_id = ensure_project(session, "default").id
        started = time.perf_counter()
        for offset in range(0, jobs, 1000):
            with sessions.begin() as session:
                queue.enqueue_jobs(session, [queue.NewJob(project_id=project_id, spec={"noop": True}, method="noop",
                                                          model="none") for _ in range(min(1000, jobs - offset))])
        done = 0
        while True:
            claimed = queue.claim_jobs(sessions, "bench-worker", lease_seconds=60, limit=batch)
            if not claimed:
                break
            if batch == 1:
                queue.complete_job(sessions, claimed[0].id, "bench-worker")
            else:
                queue.complete_jobs(sessions, [job.id for job in claimed], "bench-worker")
            done += len(claimed)
        elapsed = time.perf_counter() - started
        engine.dispose()
        assert done == jobs, (done, jobs)
        return jobs / elapsed


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10, help="procrastinate worker concurrency")
    args = parser.parse_args()
    results = {
        "jobs": args.jobs,
        f"alignd_batch{args.batch}_jobs_per_s": run_alignd(args.jobs, args.batch),
        "alignd_batch1_jobs_per_s": run_alignd(min(args.jobs, 2000), 1),
        f"procrastinate_c{args.concurrency}_jobs_per_s": run_procrastinate(args.jobs, args.concurrency),
    }
    results["ratio_batch_vs_procrastinate"] = (results[f"alignd_batch{args.batch}_jobs_per_s"]
                                               / results[f"procrastinate_c{args.concurrency}_jobs_per_s"])
    results["ratio_batch1_vs_procrastinate"] = (results["alignd_batch1_jobs_per_s"]
                                                / results[f"procrastinate_c{args.concurrency}_jobs_per_s"])
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
