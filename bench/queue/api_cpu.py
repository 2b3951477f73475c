"""Server CPU per request, without the network: create-job and list-jobs driven through the ASGI app in-process.

Usage: .venv/bin/python -m bench.queue.api_cpu [--requests 2000] [--baseline REF] [--rounds 3]
One request at a time (no queueing, no client on the same cores), on uvloop as uvicorn runs the app, so the
number is the app's own cost: FastAPI, our handlers, SQLAlchemy and psycopg, in the event-loop thread and the
handler threads together. It moves far less with other users' load than the HTTP benchmark (api_latency.py).
`--baseline REF` runs the code of git revision REF too, alternating with the working tree, each on a fresh
Postgres database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

# Only the standard library at module level: a child process loads this file next to another revision's
# `services` and `bench` packages (see _run_child).
REPO = Path(__file__).resolve().parents[2]
ADMIN_KEY = "bench-admin-key"
SFT_LINE = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})


def _measure_in_process(database_url: str, requests: int) -> dict[str, float]:
    """Runs inside the child process, importing whichever `services` its sys.path holds."""
    from services.api.main import create_app
    from services.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="alignd-api-cpu-"))
    app = create_app(Settings(database_url=database_url, storage_uri=str(home / "storage"), admin_key=ADMIN_KEY,
                              home=home, log_level="WARNING"))

    async def call(method: str, path: str, query: bytes = b"", body: bytes = b"",
                   content_type: bytes = b"application/json") -> bytes:
        headers = [(b"host", b"bench"), (b"authorization", f"Bearer {ADMIN_KEY}".encode())]
        if body:
            headers += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {}}
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{method} {path}: {sent[0]['status']} {b''.join(m.get('body', b'') for m in sent)!r}")
        return b"".join(message.get("body", b"") for message in sent[1:])

    async def main() -> dict[str, float]:
        async with app.router.lifespan_context(app):
            boundary = "benchboundary"
            form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
                    f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.jsonl\"\r\n"
                    f"Content-Type: application/octet-stream\r\n\r\n{(SFT_LINE + chr(10)) * 10}\r\n--{boundary}--\r\n")
            uploaded = await call("POST", "/v1/files", body=form.encode(),
                                  content_type=f"multipart/form-data; boundary={boundary}".encode())
            body = json.dumps({"model": "alignd-tiny", "training_file": json.loads(uploaded)["id"],
                               "lora": True}).encode()
            kinds = {"create_job": lambda: call("POST", "/v1/fine_tuning/jobs", body=body),
                     "list_jobs": lambda: call("GET", "/v1/fine_tuning/jobs", query=b"limit=20")}
            results = {}
            for name, request in kinds.items():
                for _ in range(200):  # warm-up: pools, caches, prepared statements
                    await request()
                if name == "list_jobs":
                    from sqlalchemy import text

                    with app.state.alignd.engine.connect() as connection:  # see api_latency: fresh tables
                        connection.execute(text("ANALYZE"))
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(requests):
                    await request()
                results[f"{name}_cpu_ms"] = round((time.process_time() - cpu) / requests * 1000, 3)
                results[f"{name}_wall_ms"] = round((time.perf_counter() - wall) / requests * 1000, 3)
            return results

    try:  # the loop uvicorn serves on when uvloop is installed (its default, loop="auto")
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def _run_child(source: Path, requests: int) -> dict[str, float]:
    from bench.queue.queue_throughput import fresh_database

    with fresh_database("alignd_api_cpu") as database:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        code = (f"import importlib.util, json, sys; sys.path.insert(0, {str(source)!r}); "
                f"spec = importlib.util.spec_from_file_location('api_cpu_child', {__file__!r}); "
                f"module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
                f"print(json.dumps(module._measure_in_process({url!r}, {requests})))")
        env = {**os.environ, "PYTHONPATH": str(source), "ALIGND_LOG_LEVEL": "WARNING"}
        result = subprocess.run([sys.executable, "-c", code], cwd=source, env=env, capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--baseline", help="git revision to measure too, alternating")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from bench.queue.api_latency import _source_tree
    from bench.queue.queue_throughput import load_average

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    loads = [load_average()]
    samples: dict[str, list[dict[str, float]]] = {}
    with ExitStack() as stack:
        systems = [(commit, REPO)]
        if args.baseline:
            systems.insert(0, (f"baseline {args.baseline}", _source_tree(args.baseline, stack)))
        for _ in range(args.rounds):
            for name, source in systems:
                samples.setdefault(name, []).append(_run_child(source, args.requests))
                loads.append(load_average())
                print(name, samples[name][-1], file=sys.stderr, flush=True)
    medians = {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
               for name, runs in samples.items()}
    print(json.dumps({"commit": commit, "requests": args.requests, "load_average_1min": loads, "median": medians,
                      "samples": samples}, indent=2))


if __name__ == "__main__":
    main()
