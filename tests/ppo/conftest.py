"""Test setup for PPO: an SFT'd tiny policy and a reward model on the demo task, trained once per session.

Plain torch loops (not mocks): the same chat template, the same models and files the stages use; they
only make the starting points of PPO quickly and deterministically.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SFT_STEPS = 100
RM_STEPS = 150


def _conversation_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        return_dict=True, return_assistant_tokens_mask=True,
    )
    return encoded["input_ids"], encoded["assistant_masks"]


def _right_pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows])


def train_sft(base_dir: Path, sft_file: Path, out_dir: Path, steps: int = SFT_STEPS, seed: int = 0) -> Path:
    """Assistant-only next-token loss on the demo SFT file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    rows = [json.loads(line)["messages"] for line in sft_file.read_text().splitlines()]
    examples = [_conversation_ids(tokenizer, row[0]["content"], row[1]["content"]) for row in rows]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = rng.sample(examples, 32)
        input_ids = _right_pad([ids for ids, _ in batch], tokenizer.pad_token_id)
        labels = _right_pad([[i if m else -100 for i, m in zip(ids, mask)] for ids, mask in batch], -100)
        loss = model(input_ids=input_ids, attention_mask=(labels != -100) | (input_ids != tokenizer.pad_token_id),
                     labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def train_reward_model(base_dir: Path, preference_file: Path, out_dir: Path, steps: int = RM_STEPS,
                       seed: int = 0) -> Path:
    """Bradley-Terry on chosen / rejected conversations, starting from `base_dir` with a fresh one-logit head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = [json.loads(line) for line in preference_file.read_text().splitlines()]
    pairs = [(_conversation_ids(tokenizer, r["prompt"], r["chosen"])[0],
              _conversation_ids(tokenizer, r["prompt"], r["rejected"])[0]) for r in rows]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = rng.sample(pairs, 32)
        sequences = [chosen for chosen, _ in batch] + [rejected for _, rejected in batch]
        input_ids = _right_pad(sequences, tokenizer.pad_token_id)
        attention = _right_pad([[1] * len(s) for s in sequences], 0)
        rewards = model(input_ids=input_ids, attention_mask=attention).logits.squeeze(-1)
        loss = -torch.nn.functional.logsigmoid(rewards[:32] - rewards[32:]).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def sft_model_dir(tiny_model_dir: Path, demo_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    with one_torch_thread():
        return train_sft(tiny_model_dir, demo_data["sft"], tmp_path_factory.mktemp("ppo-sft"))


@pytest.fixture(scope="session")
def reward_model_dir(sft_model_dir: Path, demo_data: dict[str, Path],
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    with one_torch_thread():
        return train_reward_model(sft_model_dir, demo_data["preference"], tmp_path_factory.mktemp("ppo-rm"))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """The tiny models' matmuls are far too small for threads: with other work on the 2 cores, OpenMP
    threads spinning against each other made PPO 6x slower (53 s vs 8.5 s for 2 updates). Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread_per_test() -> Iterator[None]:
    with one_torch_thread():
        yield
