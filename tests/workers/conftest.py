"""Fixtures for the workers' tests: one local Ray per session, the real API under uvicorn, real dispatchers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from workers_support import Stack, start_stack

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def ray_address(alignd_home: Path) -> Iterator[str]:
    """The session's one local Ray (2 CPUs, no dashboard, loopback only); its GCS address."""
    import ray

    from services.workers.ray_cluster import connect_ray

    address = connect_ray(None, num_cpus=2)
    yield address
    ray.shutdown()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private database on the local PostgreSQL, dropped at the end of the session."""
    name = f"alignd_workers_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory, ray_address: str) -> Iterator[Stack]:
    """API + one in-process dispatcher on SQLite, shared by the SQLite tests of the session."""
    root = tmp_path_factory.mktemp("workers-sqlite")
    stack = start_stack(f"sqlite:///{root / 'alignd.db'}", root / "storage")
    stack.start_dispatcher()
    yield stack
    stack.close()


@pytest.fixture(scope="session")
def uploaded(sqlite_stack: Stack, demo_data: dict[str, Path]) -> dict[str, str]:
    """The demo files uploaded once through the API: name -> file id."""
    client = sqlite_stack.client()
    return {name: client.upload(demo_data[name]) for name in ("sft", "openai_dpo", "preference", "prompts", "eval")}
