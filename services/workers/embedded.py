"""`alignd up`: the API, one dispatcher and a local Ray in one process, with SQLite and files under ALIGND_HOME.

Ctrl-C stops the API, then Ray (which ends a running stage at once); the interrupted job keeps its
lease row and its checkpoints. Because an embedded home has exactly one dispatcher, the next start
knows every 'running' job belongs to a dead process and requeues it at once, and the new attempt
resumes from the newest checkpoint.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.workers.home_lock import HomeLock

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin_key"
EMBEDDED_POLL_INTERVAL_S = 0.25
API_STOP_TIMEOUT_S = 10.0
DISPATCHER_IDLE_STOP_TIMEOUT_S = 5.0
RAY_SHUTDOWN_TIMEOUT_S = 20.0


def admin_key_for(home: Path) -> str:
    """ALIGND_ADMIN_KEY, else a key made once and kept (mode 0600) under the home."""
    if os.environ.get("ALIGND_ADMIN_KEY"):
        return os.environ["ALIGND_ADMIN_KEY"]
    path = home / ADMIN_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    key = f"sk-alignd-{secrets.token_urlsafe(24)}"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(key + "\n")
    return key


@dataclass
class EmbeddedAlignd:
    """Start with `start()`, stop with `stop()`; `url` and `api_key` say how to reach it."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 8000
    lease_seconds: float = 30.0
    warm_worker: bool = True  # single-worker CPU stages skip Ray Train's start-up (warm_worker.py)
    api_key: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _server: Any = None
    dispatcher: Any = None
    _owns_ray: bool = False
    _lock: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmbeddedAlignd:
        import uvicorn

        from services.api.main import create_app
        from services.settings import Settings
        from services.store import queue
        from services.workers.dispatcher import Dispatcher
        from services.workers.ray_cluster import connect_ray

        self.home = Path(self.home).expanduser()
        self._lock = HomeLock(self.home)
        self._lock.acquire(self.url)  # HomeInUse: another instance would lose its running jobs to this one
        os.environ["ALIGND_HOME"] = str(self.home)  # the built-in tiny model is cached here, for Ray workers too
        self.api_key = admin_key_for(self.home)
        settings = Settings(home=self.home, admin_key=self.api_key, lease_seconds=self.lease_seconds)
        app = create_app(settings)
        context = app.state.alignd
        # One dispatcher per embedded home: leases still held are a previous, dead process's.
        requeued = queue.requeue_expired_leases(context.sessions, now=time.time() + self.lease_seconds + 1)
        if requeued:
            log.info("requeued jobs interrupted by the last shutdown: %s", ", ".join(requeued))
        import ray

        self._owns_ray = not ray.is_initialized()  # a caller's Ray (tests, notebooks) is left running
        connect_ray(settings.ray_address, num_cpus=os.cpu_count())
        # SQLite has no LISTEN/NOTIFY: poll often (one cheap local query) so a POSTed job starts promptly.
        self.dispatcher = Dispatcher(
            context.sessions,
            settings.resolved_storage_uri,
            lease_seconds=self.lease_seconds,
            engine=context.engine,
            poll_interval_s=EMBEDDED_POLL_INTERVAL_S,
            warm_worker=self.warm_worker,
        )
        self._server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level="warning"))
        self._spawn("api", self._server.run)
        self.dispatcher.prestart_warm_worker()  # before the thread, so `dispatcher.warm_pool` is set on return
        self._spawn("dispatcher", lambda: self.dispatcher.run(self._stop))
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._threads[0].is_alive():
                raise RuntimeError(f"the API did not start on {self.url} (is the port taken?)")
            time.sleep(0.05)
        return self

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=f"alignd-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, ray_timeout_s: float = RAY_SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop the API and the dispatcher, then Ray (a running stage ends with it); False if Ray had to be abandoned.

        Every wait is bounded: on Ctrl-C the terminal also signals Ray's own processes, and a driver whose GCS
        is gone can block in ray.shutdown (or in a Ray call of the dispatcher) far longer than a user waits.
        """
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        threads = {thread.name: thread for thread in self._threads}
        _join(threads.get("alignd-api"), API_STOP_TIMEOUT_S)
        # An idle dispatcher leaves its poll at once; one running a stage waits in Ray until Ray goes below.
        _join(threads.get("alignd-dispatcher"), DISPATCHER_IDLE_STOP_TIMEOUT_S, warn=False)
        clean = True
        if self._owns_ray:
            clean = _shutdown_ray(ray_timeout_s)
            if not clean:
                kill_child_processes()
        _join(threads.get("alignd-dispatcher"), DISPATCHER_IDLE_STOP_TIMEOUT_S)
        if self._lock is not None:
            self._lock.release()
        return clean


def _join(thread: threading.Thread | None, timeout_s: float, warn: bool = True) -> None:
    if thread is not None and thread.is_alive():
        thread.join(timeout=timeout_s)
        if warn and thread.is_alive():
            log.warning("%s did not stop within %.0f s; leaving it behind", thread.name, timeout_s)


def _shutdown_ray(timeout_s: float) -> bool:
    """ray.shutdown() in a daemon thread, given up after timeout_s (it can block on a GCS that already died)."""
    import ray

    if not ray.is_initialized():
        return True
    shutdown = threading.Thread(target=ray.shutdown, name="alignd-ray-shutdown", daemon=True)
    shutdown.start()
    shutdown.join(timeout=timeout_s)
    if shutdown.is_alive():
        log.warning("ray.shutdown() did not return within %.0f s; ending this instance's Ray processes", timeout_s)
        return False
    return True


def kill_child_processes() -> None:
    """SIGKILL what this process started (only its own local Ray when it owns Ray): nothing may outlive `up`."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
