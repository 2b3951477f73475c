"""Loss functions: small hand-computed cases and parity with TRL's trainers' own loss code."""

from __future__ import annotations

import math

import pytest
import torch

from alignment_core.losses import bradley_terry_loss, dpo_loss, masked_next_token_loss, sequence_log_probs

LOG_SIGMOID_1 = math.log1p(math.exp(-1.0))  # -log sigmoid(1)


def test_bradley_terry_hand_computed():
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(LOG_SIGMOID_1, abs=1e-6)
    with_margin = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]), margin=torch.tensor([1.0]))
    assert with_margin.item() == pytest.approx(LOG_SIGMOID_1, abs=1e-6)
    centered = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), center_rewards_coefficient=0.5)
    assert centered.item() == pytest.approx(LOG_SIGMOID_1 + 0.5 * 1.0, abs=1e-6)


@pytest.mark.parametrize(("loss_type", "smoothing", "expected"), [
    ("sigmoid", 0.0, LOG_SIGMOID_1),
    ("sigmoid", 0.1, 0.9 * LOG_SIGMOID_1 + 0.1 * (LOG_SIGMOID_1 + 1.0)),  # -log sigmoid(-1) = 1 + -log sigmoid(1)
    ("hinge", 0.0, 0.0),
    ("ipo", 0.0, 1.0),  # (delta - 1/(2 beta))^2 = (2 - 1)^2
])
def test_dpo_hand_computed(loss_type, smoothing, expected):
    # delta = (-1 - -2) - (-3 - -2) = 2; beta 0.5 -> beta * delta = 1
    losses, chosen_reward, rejected_reward = dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
        beta=0.5, loss_type=loss_type, label_smoothing=smoothing,
    )
    assert losses.item() == pytest.approx(expected, abs=1e-6)
    assert chosen_reward.item() == pytest.approx(0.5) and rejected_reward.item() == pytest.approx(-0.5)


def test_masked_next_token_loss_matches_transformers(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    input_ids = torch.randint(10, 200, (2, 12))
    labels = input_ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=labels)
    assert masked_next_token_loss(output.logits, labels).item() == pytest.approx(output.loss.item(), rel=1e-5)


def test_sequence_log_probs_hand_computed():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))
    labels = torch.tensor([[0, 1, 0]])
    mask = torch.tensor([[0, 1, 1]])
    expected = math.log(0.5) + math.log(0.25)  # p(1 | pos 0) + p(0 | pos 1)
    assert sequence_log_probs(logits, labels, mask).item() == pytest.approx(expected, abs=1e-6)


@pytest.fixture(scope="module")
def reference_model_dir(tmp_path_factory):
    """A second tiny model (other seed) as DPO reference, built once for all loss variants."""
    from alignment_core.modeling.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("dpo-reference"), seed=7)


def _tokenized_pairs(tokenizer):
    from alignment_core.data.tokenization import tokenize_preference_row
    from alignment_core.specs import DataSpec

    data = DataSpec(train_files=["x"], max_length=64, max_prompt_length=32)
    rows = [
        {"prompt": [{"role": "user", "content": "Sort the letters: c a b"}],
         "chosen": [{"role": "assistant", "content": "a b c"}],
         "rejected": [{"role": "assistant", "content": "c a b a"}], "margin": 0.5},
        {"prompt": [{"role": "user", "content": "Sort the letters: d b"}],
         "chosen": [{"role": "assistant", "content": "b d"}],
         "rejected": [{"role": "assistant", "content": "d"}], "margin": 1.5},
    ]
    return [tokenize_preference_row(tokenizer, row, data) for row in rows]


@pytest.mark.parametrize(("loss_type", "smoothing"), [("sigmoid", 0.0), ("sigmoid", 0.2), ("hinge", 0.0),
                                                      ("ipo", 0.0)])
def test_dpo_loss_matches_trl_dpo_trainer(tiny_model_dir, reference_model_dir, tmp_path, loss_type, smoothing):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from alignment_core.specs import DpoMethod
    from alignment_core.stages.dpo import loss_arguments, pretokenized_dpo_trainer_class

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(reference_model_dir).eval()
    rows = _tokenized_pairs(tokenizer)
    for row in rows:
        row.pop("margin")
    method = DpoMethod(beta=0.3, loss_type=loss_type, label_smoothing=smoothing)
    config = DPOConfig(output_dir=str(tmp_path / "out"), beta=0.3, bf16=False, use_cpu=True, report_to="none",
                       per_device_train_batch_size=2, activation_checkpointing=False, **loss_arguments(method))
    from datasets import Dataset

    trainer = pretokenized_dpo_trainer_class()(model=policy, ref_model=reference, args=config,
                                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = trainer.data_collator(rows)
    policy.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(policy, dict(batch)).item()
        ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        policy_logps = sequence_log_probs(policy(input_ids=ids, attention_mask=attention).logits, ids, completion)
        reference_logps = sequence_log_probs(reference(input_ids=ids, attention_mask=attention).logits, ids,
                                             completion)
    lengths = completion.sum(dim=1).float()
    ours, _, _ = dpo_loss(*policy_logps.chunk(2), *reference_logps.chunk(2), beta=0.3, loss_type=loss_type,
                          label_smoothing=smoothing, chosen_lengths=lengths[:2], rejected_lengths=lengths[2:])
    assert ours.mean().item() == pytest.approx(trl_loss, rel=1e-4, abs=1e-5)


def test_bradley_terry_matches_trl_reward_trainer(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from alignment_core.data.tokenization import reward_model_row

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = [reward_model_row(row) for row in _tokenized_pairs(tokenizer)]
    config = RewardConfig(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to="none",
                          center_rewards_coefficient=0.01, activation_checkpointing=False)
    trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer)
    batch = trainer.data_collator(rows)
    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch)).item()
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = rewards.chunk(2)
    ours = bradley_terry_loss(chosen, rejected, margin=batch["margin"], center_rewards_coefficient=0.01)
    assert ours.item() == pytest.approx(trl_loss, rel=1e-5)
