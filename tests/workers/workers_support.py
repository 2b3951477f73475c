"""Helpers shared by the workers' tests (imported as a module: tests/workers is on sys.path)."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ADMIN_KEY = "admin-workers-" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sft_body(model: str, training_file: str, max_steps: int, save_steps: int, **hyper: Any) -> dict[str, Any]:
    """A small SFT job on the test tiny model (short sequences: seconds per dozen steps on CPU)."""
    return {
        "model": model,
        "training_file": training_file,
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "max_steps": max_steps,
                    "save_steps": save_steps,
                    "batch_size": 8,
                    "learning_rate": 1e-3,
                    "logging_steps": 1,
                    **hyper,
                }
            },
        },
        "max_length": 64,
        "max_prompt_length": 32,
    }


def wait_for(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.25) -> Any:
    """Poll until `predicate()` is truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Stack:
    """The real API over HTTP plus (optionally) an in-process dispatcher, on one database and storage."""

    url: str
    database_url: str
    storage_dir: Path
    app: Any
    server: Any
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def sessions(self) -> Any:
        return self.app.state.alignd.sessions

    def client(self) -> Any:
        from services.cli.rest_client import AligndClient

        return AligndClient(self.url, ADMIN_KEY)

    def start_dispatcher(self, lease_seconds: float = 10.0) -> Any:
        from services.workers.dispatcher import Dispatcher

        dispatcher = Dispatcher(self.sessions, str(self.storage_dir), lease_seconds=lease_seconds, poll_interval_s=0.3)
        thread = threading.Thread(target=dispatcher.run, args=(self.stop,), daemon=True)
        thread.start()
        self.threads.append(thread)
        return dispatcher

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)
        self.server.should_exit = True


def start_stack(database_url: str, storage_dir: Path) -> Stack:
    import uvicorn

    from services.api.main import create_app
    from services.settings import Settings

    settings = Settings(
        database_url=database_url,
        storage_uri=str(storage_dir),
        admin_key=ADMIN_KEY,
        home=storage_dir.parent,
        log_level="WARNING",
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return Stack(f"http://127.0.0.1:{port}", database_url, storage_dir, app, server)


def session_processes(session_id: int) -> list[Any]:
    """Live processes of one process session (a started instance and its Ray), zombies excluded."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getsid(process.pid) == session_id and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return found


def started_events(client: Any, job_id: str) -> list[dict]:
    """The data of each 'stage started' event of a job (the ones naming the worker's pid), oldest first."""
    return [event["data"] for event in client.events(job_id) if (event.get("data") or {}).get("pid")]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
