"""`alignd train` on specs and data a user gets wrong: every problem named at once (with the field probably meant),
bad inputs refused before the model loads, run-time data problems as one message; no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAT = {"messages": [{"role": "user", "content": "sort c b a"}, {"role": "assistant", "content": "a b c"}]}


def alignd(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALIGND_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture()
def chat_file(tmp_path: Path) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(CHAT) + "\n")
    return path


def test_every_spec_problem_is_named_with_a_suggestion(tmp_path: Path, chat_file: Path) -> None:
    spec = tmp_path / "typo.yaml"
    spec.write_text("method: {type: dpo, betta: 0.1}\nmodel: {name_or_path: alignd-tiny, lora: {rank: 8}}\n"
                    f"data: {{train_file: [{chat_file}]}}\ntraining: {{learning_rat: 1.0e-3, epochs: lots}}\n")
    result = alignd("train", str(spec), "-o", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for line in ("method.betta: unknown field (did you mean 'beta'?)",
                 "data.train_file: unknown field (did you mean 'train_files'?)",
                 "training.learning_rat: unknown field (did you mean 'learning_rate'?)",
                 "model.lora.rank: unknown field (expected one of: alpha, dropout, r, target_modules)",
                 "training.epochs: Input should be a valid number"):
        assert line in result.stderr, result.stderr
    spec.write_text(f"method: sft\nmodel: {{name_or_path: alignd-tiny}}\ndata: {{train_files: [{chat_file}]}}\n")
    result = alignd("train", str(spec), "-o", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path)
    assert "method: unknown method type 'sft' (did you mean 'supervised'?); expected one of: supervised," \
        in result.stderr
    listed = tmp_path / "list.yaml"
    listed.write_text("- method: supervised\n")
    result = alignd("plan", str(listed), home=tmp_path / "home", cwd=tmp_path)
    assert result.returncode == 2 and "a spec is a mapping" in result.stderr


def test_inputs_are_checked_before_the_model_loads(tmp_path: Path, chat_file: Path) -> None:
    cases = {
        "model: {name_or_path: ./no-such-model}": "model.name_or_path: no model folder './no-such-model'",
        "model: {name_or_path: runs/sft/model}": "no model folder 'runs/sft/model'",
        # Windows spelling: the API's rule too (alignment_core.modeling.model_names), not a hub id.
        "model: {name_or_path: '..\\models\\sft'}": "no model folder '..\\models\\sft'",
    }
    for model, expected in cases.items():
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"method: supervised\n{model}\ndata: {{train_files: [{chat_file}]}}\n")
        result = alignd("train", str(spec), "-o", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
    data_cases = {
        f"method: supervised\ndata: {{train_files: [{tmp_path / 'missing.jsonl'}]}}": "data.train_files: no file",
        f"method: dpo\ndata: {{train_files: [{chat_file}]}}": "method 'dpo' needs data in one of",
        f"method: supervised\ndata: {{train_files: [{chat_file}], eval_files: [{tmp_path / 'spec.yaml'}]}}":
            "data.eval_files: ",
        f"method: orpo\ndata: {{train_files: [{chat_file}]}}": "method 'orpo' has no stage yet",
    }
    for body, expected in data_cases.items():
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"model: {{name_or_path: alignd-tiny}}\n{body}\n")
        result = alignd("train", str(spec), "-o", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr, (
            body, result.stderr)
    assert not (tmp_path / "home" / "models").exists()  # refused before even the tiny model was built


@pytest.mark.slow
def test_a_bom_file_trains_and_a_run_time_data_problem_is_one_message(tmp_path: Path, chat_file: Path) -> None:
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (json.dumps(CHAT) + "\r\n").encode() * 4)
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"\xef\xbb\xbf" + f"method: supervised\nmodel: {{name_or_path: alignd-tiny}}\n"
                     f"data: {{train_files: [{bom}], max_length: 64, max_prompt_length: 32}}\n"
                     "training: {max_steps: 1, batch_size: 2}\n".encode())
    result = alignd("train", str(spec), "-o", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "completed"
    # Every example is longer than the length filter: found only after tokenizing, reported as one message.
    spec.write_text(f"method: supervised\nmodel: {{name_or_path: alignd-tiny}}\n"
                    f"data: {{train_files: [{chat_file}], filters: {{max_length: 2}}}}\n"
                    "training: {max_steps: 1}\n")
    result = alignd("train", str(spec), "-o", str(tmp_path / "out2"), home=tmp_path / "home", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "every train example was dropped" in output and "Traceback" not in output


@pytest.mark.slow
def test_an_output_dir_of_another_spec_is_not_resumed(tmp_path: Path, chat_file: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "sort b a", "chosen": "a b", "rejected": "b a"}) + "\n")
    common = "model: {name_or_path: alignd-tiny}\ntraining: {max_steps: 1, batch_size: 1, save_steps: 1}\n"
    sft, dpo = tmp_path / "sft.yaml", tmp_path / "dpo.yaml"
    sft.write_text(f"method: supervised\n{common}data: {{train_files: [{chat_file}], max_length: 64}}\n")
    dpo.write_text(f"method: dpo\n{common}data: {{train_files: [{pairs}], max_length: 64}}\n")
    out = str(tmp_path / "out")
    assert alignd("train", str(sft), "-o", out, home=tmp_path / "home", cwd=tmp_path).returncode == 0
    refused = alignd("train", str(dpo), "-o", out, home=tmp_path / "home", cwd=tmp_path)
    assert refused.returncode == 2 and "holds checkpoints of a run with another method / data" in refused.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text())["method"] == "supervised"  # untouched
    again = alignd("train", str(sft), "-o", out, home=tmp_path / "home", cwd=tmp_path)  # same spec: resumes
    assert again.returncode == 0, again.stderr
    fresh = alignd("train", str(dpo), "-o", out, "--no-resume", home=tmp_path / "home", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text())["method"] == "dpo"


@pytest.mark.slow
def test_home_relative_model_and_data_paths_load(tmp_path: Path, chat_file: Path) -> None:
    """'~/…' in a spec is the user's home, as in the shell (the loaders would read it literally)."""
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "chat.jsonl").write_text(chat_file.read_text())
    env = {**os.environ, "HOME": str(tmp_path / "user"), "ALIGND_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli.main", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=600)

    assert run("make-tiny-model", str(tmp_path / "user" / "tiny")).returncode == 0
    spec = tmp_path / "spec.yaml"
    spec.write_text("method: supervised\nmodel: {name_or_path: ~/tiny}\n"
                    "data: {train_files: [~/chat.jsonl], max_length: 64}\ntraining: {max_steps: 1}\n")
    result = run("train", str(spec), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    planned = run("plan", str(spec), "--gpu", "T4-16GB")
    assert planned.returncode == 0 and "fits" in planned.stdout, planned.stdout + planned.stderr
    recorded = json.loads((tmp_path / "out" / "spec.json").read_text())
    assert recorded["model"]["name_or_path"] == str(tmp_path / "user" / "tiny")
    assert recorded["data"]["train_files"] == [str(tmp_path / "user" / "chat.jsonl")]


@pytest.mark.slow
def test_a_run_time_reward_error_is_one_message_and_verbose_shows_the_traceback(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "sort c b a"}) + "\n")
    spec = tmp_path / "ppo.yaml"
    # The module is imported only when the stage builds its reward client, after the spec was accepted.
    spec.write_text("method: {type: ppo, reward: {type: function, function: 'no_such_module_here:score'}}\n"
                    f"model: {{name_or_path: alignd-tiny}}\ndata: {{train_files: [{prompts}]}}\n"
                    "training: {max_steps: 1}\n")
    result = alignd("train", str(spec), "-o", str(tmp_path / "out"), home=tmp_path / "home", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "reward source function 'no_such_module_here:score' failed: cannot import module" in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) <= 4, output
    verbose = alignd("--verbose", "train", str(spec), "-o", str(tmp_path / "out"), "--no-resume",
                     home=tmp_path / "home", cwd=tmp_path)
    assert verbose.returncode != 0 and "Traceback" in verbose.stdout + verbose.stderr
    assert "RewardSourceError" in verbose.stdout + verbose.stderr
