"""Shared fixtures: a tiny model and the demo data, built once per test session, fully offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

# Offline before anything imports transformers: an accidental hub call must fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def alignd_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private ALIGND_HOME for the whole session, so tests never touch ~/.alignd."""
    home = tmp_path_factory.mktemp("alignd-home")
    os.environ["ALIGND_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alignment_core.modeling.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from alignment_core.demo.task import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("demo-data"), seed=0)


@contextmanager
def _alignd_serve(env: dict[str, str], log_path: Path, ready_timeout_s: float = 60,
                  extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """`alignd serve` as a user starts it, on a free port; yields its URL once /readyz answers."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.cli.main", "serve", "--host", "127.0.0.1",
                                    "--port", str(port), *extra_args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    pytest.fail(f"alignd serve exited with {process.returncode}: {log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"alignd serve not ready after {ready_timeout_s:.0f} s: {log_path.read_text()}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=15)


@pytest.fixture(scope="session")
def alignd_serve() -> Callable[..., AbstractContextManager[str]]:
    """Starts `alignd serve` subprocesses: `with alignd_serve(env, log_path) as url: ...`."""
    return _alignd_serve
