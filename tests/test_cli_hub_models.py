"""`alignd train` of a hub model that is not downloaded: refused in seconds, saying the model is neither a folder
nor cached and why the hub was not asked or could not answer (it failed after the imports, or after a minute of
retries, blaming the network for what is as often a typo); a cached copy trains offline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAT = {"messages": [{"role": "user", "content": "sort c b a"}, {"role": "assistant", "content": "a b c"}]}
NOT_CACHED = "is neither a model folder here nor in the Hugging Face cache"


def train(model: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(CHAT) + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"method: supervised\nmodel: {{name_or_path: {model}}}\n"
                    f"data: {{train_files: [{data}], max_length: 64}}\ntraining: {{max_steps: 1}}\n")
    base = {name: value for name, value in os.environ.items()
            if name not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    full_env = {**base, "ALIGND_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "hub"),
                "COLUMNS": "300", **env}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "services.cli.main", "train", str(spec), "-o",
                             str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, env=full_env,
                            timeout=600)
    return result, time.monotonic() - started


def test_an_unknown_hub_id_offline_is_refused_before_loading(tmp_path: Path) -> None:
    result, _ = train("nonexistent-org/nonexistent-model", tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    message = " ".join(result.stderr.replace("│", " ").split())  # the error box, unwrapped
    assert f"'nonexistent-org/nonexistent-model' {NOT_CACHED} ({tmp_path / 'hub'})" in message, message
    assert "offline mode is on (HF_HUB_OFFLINE), so the hub is not asked" in message


def test_an_unreachable_hub_is_named_at_once(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result, seconds = train("nonexistent-org/nonexistent-model", tmp_path, HF_ENDPOINT=endpoint)
    message = " ".join(result.stderr.replace("│", " ").split())
    assert result.returncode == 2 and NOT_CACHED in message and "the Hugging Face hub cannot be reached" in message
    assert seconds < 30, seconds  # the loader's retries took about a minute


@pytest.mark.slow
def test_a_cached_hub_model_trains_offline(tmp_path: Path) -> None:
    from alignment_core.modeling.tiny import make_tiny_model

    # The cache's layout (models--ORG--NAME, refs/main naming the snapshot) with the tiny model as the snapshot.
    repo = tmp_path / "hub" / "models--someorg--tiny"
    make_tiny_model(repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    result, _ = train("someorg/tiny", tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "completed"
