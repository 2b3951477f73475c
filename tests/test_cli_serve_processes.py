"""`alignd serve --workers 2`: one listening socket per process, so the kernel spreads connections across them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from services.cli.api_processes import reuse_port_supported

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="SO_REUSEPORT spreading is Linux-only")


def _tcp(port: int, status: str) -> list[psutil._common.sconn]:
    return [c for c in psutil.net_connections(kind="tcp") if c.status == status and c.laddr and c.laddr.port == port]


def test_two_processes_share_the_connections_and_stop_together(alignd_serve, tmp_path: Path) -> None:
    env = {**os.environ, "ALIGND_HOME": str(tmp_path / "home"), "ALIGND_ADMIN_KEY": "sk-serve-processes"}
    env.pop("ALIGND_DATABASE_URL", None)
    with alignd_serve(env, tmp_path / "serve.log", extra_args=("--workers", "2")) as url:
        port = int(url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 60  # /readyz answered from the first process up; the other may still import
        while len(listeners := {c.pid for c in _tcp(port, psutil.CONN_LISTEN)}) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(listeners) == 2, listeners  # a socket of its own per process
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(40)]
        try:
            for client in clients:  # each keeps its connection open (keep-alive)
                assert client.get("/healthz").status_code == 200
            per_process = {pid: sum(1 for c in _tcp(port, psutil.CONN_ESTABLISHED) if c.pid == pid)
                           for pid in listeners}
            # uvicorn's shared socket gave 47 / 3 and 50 / 0; a hash split of 40 puts < 5 on one side ~1e-7 of runs.
            assert sum(per_process.values()) == 40 and min(per_process.values()) >= 5, per_process
        finally:
            for client in clients:
                client.close()

        second = subprocess.run([sys.executable, "-m", "services.cli.main", "serve", "--port", str(port),
                                 "--workers", "2"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and "already in use" in second.stderr, second.stderr
    # The fixture stopped the parent with SIGTERM: both processes are gone with it.
    psutil.wait_procs([psutil.Process(pid) for pid in listeners if psutil.pid_exists(pid)], timeout=30)
    assert not _tcp(port, psutil.CONN_LISTEN)
