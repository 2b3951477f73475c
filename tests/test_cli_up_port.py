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
