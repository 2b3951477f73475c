"""The foundation: tiny model offline, demo data and its checker, the README and CI commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_model_reloads_offline_and_generates(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|eos|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Sort the letters: c a b"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_chat_template_marks_only_assistant_tokens(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "user", "content": "Sort the letters: c a b"},
        {"role": "assistant", "content": "a b c"},
    ]
    encoded = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    marked = [tok for tok, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "a b c<|eos|>"


def test_demo_checker_agrees_with_generated_data(demo_data: dict[str, Path]) -> None:
    from alignment_core.demo.task import check, score

    sft_rows = [json.loads(line) for line in demo_data["sft"].read_text().splitlines()]
    for row in sft_rows:
        user = next(m["content"] for m in row["messages"] if m["role"] == "user")
        answer = next(m["content"] for m in row["messages"] if m["role"] == "assistant")
        assert check(user, answer) and score(user, answer) == 1.0
    for path in (demo_data["preference"], demo_data["eval"]):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            assert check(row["prompt"], row["chosen"])
            assert not check(row["prompt"], row["rejected"])
            assert score(row["prompt"], row["rejected"]) < 1.0


def test_held_out_problems_never_in_training(demo_data: dict[str, Path]) -> None:
    train = {json.loads(line)["prompt"] for line in demo_data["preference"].read_text().splitlines()}
    held_out = {json.loads(line)["prompt"] for line in demo_data["eval"].read_text().splitlines()}
    assert held_out and not train & held_out


def test_demo_files_pass_format_validation(demo_data: dict[str, Path]) -> None:
    from alignment_core.data.formats import validate_file

    assert validate_file(demo_data["sft"]).format == "messages"
    assert validate_file(demo_data["preference"]).format == "preference"
    assert validate_file(demo_data["openai_dpo"]).format == "openai_preference"
    assert validate_file(demo_data["prompts"]).format == "prompt_only"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.+?)\n```", readme, flags=re.S)
    assert len(commands) >= 2, "README must open with the two set-up commands"
    assert commands[1].strip() in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", [["make-tiny-model", "--help"], ["make-demo-data", "--help"]])
def test_cli_commands_exist(command: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "services.cli.main", *command],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
