"""`alignd demo --url ... --api-key ...` with a wrong key or an address nothing listens on: one line naming
the server and what it answered, exit 1, no traceback (against the real app)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def demo(url: str, key: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALIGND_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "services.cli.main", "demo", "--url", url, "--api-key", key],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_demo_names_a_refused_key_and_an_unreachable_server(server, tmp_path):
    result = demo(server.base_url, "sk-not-a-key", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert f"error: {server.base_url}: GET /v1/fine_tuning/jobs -> HTTP 401: Invalid API key" in output
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = demo(nowhere, "sk-any", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and f"error: {nowhere}:" in output and "Traceback" not in output
