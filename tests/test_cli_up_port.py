"""`alignd up` on a port something else holds: a one-line error before Ray starts, not a traceback after it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_up_on_a_taken_port_says_so_at_once(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "up", "--port", str(port)], capture_output=True, text=True,
            cwd=ROOT, env={**os.environ, "ALIGND_HOME": str(tmp_path / "home")}, timeout=120)
        elapsed = time.monotonic() - started
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another with --port" \
        in result.stderr
    assert "Ray" not in result.stdout + result.stderr and elapsed < 30


def test_a_wildcard_bind_prints_an_address_a_browser_opens() -> None:
    from services.cli.up import browser_url

    assert browser_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert browser_url("::", 8000) == "http://127.0.0.1:8000"
    assert browser_url("127.0.0.1", 8140) == "http://127.0.0.1:8140"
    assert browser_url("::1", 8140) == "http://[::1]:8140"
