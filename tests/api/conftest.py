"""Fixtures for the control-plane tests: a fresh Postgres database and the real app under uvicorn."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from services.store.migrate import upgrade_database

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_KEY = "admin-" + secrets.token_hex(8)


def _postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A private database, dropped at the end of the session."""
    if not _postgres_available():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (start it: pg_ctlcluster 15 main start)")
    name = f"alignd_api_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    base_url: str
    admin_key: str
    database_url: str
    storage_dir: Path
    app: object

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    @property
    def sessions(self):
        return self.app.state.alignd.sessions


def start_server(database_url: str, storage_dir: Path, max_upload_bytes: int = 2_000_000):
    import uvicorn

    from services.api.main import create_app
    from services.settings import Settings

    settings = Settings(database_url=database_url, storage_uri=str(storage_dir), admin_key=ADMIN_KEY,
                        max_upload_bytes=max_upload_bytes, home=storage_dir.parent, log_level="WARNING")
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    running = RunningServer(base_url=f"http://127.0.0.1:{port}", admin_key=ADMIN_KEY, database_url=database_url,
                            storage_dir=storage_dir, app=app)
    return running, server, thread


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request, tmp_path_factory) -> RunningServer:
    """The real app on a free 127.0.0.1 port, once on SQLite and once on a fresh Postgres database."""
    root = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite:///{root / 'alignd.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    running, uvicorn_server, thread = start_server(database_url, root / "storage")
    yield running
    uvicorn_server.should_exit = True
    thread.join(timeout=10)
    running.app.state.alignd.engine.dispose()


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> dict[str, Path]:
    from alignment_core.demo.task import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("api-demo"), seed=0, train_size=40, eval_size=8)


@pytest.fixture(scope="session")
def project_key(server: RunningServer) -> str:
    """A key of a fresh project, created through the admin API."""
    with server.client(server.admin_key) as client:
        project = client.post("/v1/projects", json={"name": f"p-{secrets.token_hex(4)}"}).json()
        return client.post(f"/v1/projects/{project['id']}/api_keys", json={"name": "tests"}).json()["key"]


# The queue tests' databases; here, not in a test module, so no test module imports another (a bare `pytest`
# run has no `tests` package on its path).
@pytest.fixture(scope="module", params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def queue_db(request, tmp_path_factory):
    """An empty, migrated database of each kind, holding only this module's jobs."""
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_queue_db")
        return
    url = f"sqlite:///{tmp_path_factory.mktemp('queue') / 'queue.db'}"
    upgrade_database(url)
    yield url


@pytest.fixture(scope="module")
def postgres_queue_db():
    name = f"alignd_queue_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade_database(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def failing_server(tmp_path) -> RunningServer:
    """The real app on SQLite with one extra route that fails the way a bug in a handler would."""
    running, uvicorn_server, thread = start_server(f"sqlite:///{tmp_path / 'alignd.db'}", tmp_path / "storage")

    async def fails() -> None:
        raise RuntimeError("a bug in a handler")

    running.app.add_api_route("/v1/test-failure", fails, methods=["GET"])
    yield running
    uvicorn_server.should_exit = True
    thread.join(timeout=10)
    running.app.state.alignd.engine.dispose()
