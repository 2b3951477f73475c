"""The README's job-API walk-through, copied as a new user copies it: its shell lines, its OpenAI SDK snippet and its
curl line, run in a fresh folder against a real `alignd serve` (SQLite, the key where `alignd up` keeps it).

No dispatcher runs, so the job stays queued; what is checked is that every line works as written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_PORT = "127.0.0.1:8000"


def job_api_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### The job API")
    return readme[start:readme.index("\n### ", start + 1)]


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def user_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME of its own, so `~/.alignd` in the README is this test's and not the machine user's."""
    return tmp_path_factory.mktemp("readme-user")


@pytest.fixture(scope="module")
def server(user_home: Path, alignd_serve) -> Iterator[str]:
    """`alignd serve` with the admin key `alignd up` would have written to ~/.alignd/admin_key."""
    from services.workers.embedded import ADMIN_KEY_FILE

    home = user_home / ".alignd"
    home.mkdir()
    key = f"sk-alignd-readme-{secrets.token_urlsafe(12)}"
    (home / ADMIN_KEY_FILE).write_text(key + "\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("ALIGND_")}
    env.update(HOME=str(user_home), ALIGND_ADMIN_KEY=key)
    with alignd_serve(env, user_home / "serve.log") as url:
        yield url.removeprefix("http://")


def test_the_job_api_walk_through_runs_as_written(server: str, user_home: Path, tmp_path: Path) -> None:
    section = job_api_section()
    shell_blocks, python_blocks = fenced(section, "bash"), fenced(section, "python")
    assert len(shell_blocks) == 2 and len(python_blocks) == 1, "the walk-through's blocks changed shape"
    setup, curl = shell_blocks
    venv_bin = f"{Path(sys.executable).parent}/"
    (tmp_path / "snippet.py").write_text(python_blocks[0].replace(README_PORT, server))
    script = "\n".join([
        "set -euo pipefail",
        setup.replace(".venv/bin/", venv_bin),
        f"{sys.executable} snippet.py",
        curl.strip().replace(README_PORT, server) + " > jobs.json",
    ])
    env = {name: value for name, value in os.environ.items() if not name.startswith("ALIGND_")}
    env.update(HOME=str(user_home), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert "queued" in lines, result.stdout  # the retrieved job's status
    assert any(line.startswith("Created fine-tuning job: ftjob-") for line in lines), result.stdout
    assert "ppo queued" in lines, result.stdout
    listed = json.loads((tmp_path / "jobs.json").read_text())
    assert [job["method"]["type"] for job in listed["data"]] == ["ppo", "reward_model", "supervised"]
    sft, (reward, ppo) = listed["data"][2], listed["data"][1::-1]
    assert reward["depends_on"] == [sft["id"]] and set(ppo["depends_on"]) == {sft["id"], reward["id"]}


def test_every_hyperparameter_and_extension_the_readme_names_is_one_the_api_takes() -> None:
    # Without this paragraph an SDK user put save_steps in extra_body and got 'save_steps: unknown field'.
    from alignment_core.specs import TrainingSpec
    from services.api.job_requests import METHOD_CLASSES
    from services.api.schemas import JobCreate

    section = job_api_section()
    paragraph = section[section.index("Besides OpenAI's `n_epochs`"):section.index("`method.type` is")]
    hyper_part, top_part = paragraph.split("go at the top level")[0].split("resource\nsettings")
    hyperparameters = set(re.findall(r"`([a-z_]+)`", hyper_part)) - {"training", "dpo", "ppo"}
    method_fields = {name for cls in METHOD_CLASSES.values() for name in cls.model_fields}
    openai_names = {"n_epochs", "batch_size", "learning_rate_multiplier"}
    assert {"max_steps", "save_steps", "beta", "kl_coef"} <= hyperparameters
    assert hyperparameters <= set(TrainingSpec.model_fields) | method_fields | openai_names
    extensions = set(re.findall(r"`([a-z_]+)`", top_part))
    assert {"lora", "max_length"} <= extensions <= set(JobCreate.model_fields)


@pytest.mark.parametrize("output", ["full", "lora_merged"])
def test_the_fine_tuned_model_snippet_loads_and_generates(server: str, user_home: Path, tmp_path: Path,
                                                          tiny_model_dir: Path, output: str) -> None:
    """The README's 'Using a fine-tuned model' block, run on a job finished the way a dispatcher finishes one
    (the store's claim and complete), through the real API. Its output is a full model folder, or the layout of a
    LoRA job run with merge_adapters: the adapter (whose base, 'alignd-tiny', no library outside alignd can
    resolve) and the merged model in 'merged'."""
    from openai import OpenAI

    from services.store import queue
    from services.store.engine import make_engine, make_session_factory

    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Using a fine-tuned model")
    (block,) = fenced(readme[start:readme.index("\n### ", start + 1)], "python")
    key = (user_home / ".alignd" / "admin_key").read_text().strip()
    client = OpenAI(base_url=f"http://{server}/v1", api_key=key, max_retries=0)
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "Sort the letters: b a"},
                                             {"role": "assistant", "content": "a b"}]}) + "\n")
    upload = client.files.create(file=data.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="alignd-tiny", training_file=upload.id, extra_body={"priority": 1000})
    sessions = make_session_factory(make_engine(f"sqlite:///{user_home / '.alignd' / 'alignd.db'}"))
    claimed = queue.claim_next_job(sessions, "readme-test-worker", lease_seconds=600)
    assert claimed is not None and claimed.id == job.id
    model_path = tiny_model_dir
    if output == "lora_merged":
        model_path = tmp_path / "output-model"
        shutil.copytree(tiny_model_dir, model_path / "merged")
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # saved beside the adapter
            if (tiny_model_dir / name).exists():
                shutil.copy(tiny_model_dir / name, model_path / name)
        (model_path / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "base_model_name_or_path": "alignd-tiny", "r": 16, "target_modules": "all-linear"}))
    queue.complete_job(sessions, job.id, "readme-test-worker", attempt=claimed.attempt, model_path=str(model_path))

    script = "\n".join([
        "from openai import OpenAI",
        f"client = OpenAI(base_url='http://{server}/v1', api_key={key!r}, max_retries=0)",
        f"job = client.fine_tuning.jobs.retrieve({job.id!r})",
        block,
    ])
    env = {name: value for name, value in os.environ.items() if not name.startswith("ALIGND_")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stdout.strip(), "the snippet printed no generated text"
