"""Evaluation on the tiny model: generation, response log-probs, win-rate, reward accuracy, perplexity."""

from __future__ import annotations

import math

import pytest
import torch

from alignment_core.data.chat import render_prompt
from alignment_core.demo.task import check
from alignment_core.evaluation.demo_task import demo_samples, rule_satisfaction
from alignment_core.evaluation.generation import generate_completions
from alignment_core.evaluation.logprobs import encode_prompt_response, response_logprobs
from alignment_core.evaluation.perplexity import perplexity
from alignment_core.evaluation.preference import preference_margins, preference_win_rate
from alignment_core.evaluation.reward import pairwise_accuracy, score_texts
from alignment_core.evaluation.text_metrics import bleu_rouge
from alignment_core.modeling.loading import load_causal_lm, load_sequence_scorer, load_tokenizer
from alignment_core.specs import LoraSpec, ModelSpec

ROWS = [
    {"prompt": "Sort the letters: c a b", "chosen": "a b c", "rejected": "c a b"},
    {"prompt": "Sort the letters: h d e g f", "chosen": "d e f g h", "rejected": "d e f h"},
    {"prompt": [{"role": "user", "content": "Sort the letters: b a"}],
     "chosen": [{"role": "assistant", "content": "a b"}], "rejected": "b a"},
    {"input": {"messages": [{"role": "user", "content": "Sort the letters: g a c a"}]},
     "preferred_output": [{"role": "assistant", "content": "a a c g"}],
     "non_preferred_output": [{"role": "assistant", "content": "a c g"}]},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_causal_lm(ModelSpec(name_or_path=str(tiny_model_dir)), trainable=False)


def test_batched_greedy_generation_equals_one_at_a_time(model, tokenizer):
    prompts = ["Sort the letters: c a b", "Sort the letters: h d e g f a", [{"role": "user", "content": "x"}]]
    batched = generate_completions(model, tokenizer, prompts, max_new_tokens=8, batch_size=3)
    single = [generate_completions(model, tokenizer, [p], max_new_tokens=8)[0] for p in prompts]
    assert batched == single
    assert tokenizer.padding_side == "right"  # restored after generating with left padding
    assert all("<|" not in text for text in batched)  # special tokens are dropped


def test_sampling_is_reproducible_with_a_seed(model, tokenizer):
    prompts = ["Sort the letters: c a b"] * 4
    first = generate_completions(model, tokenizer, prompts, max_new_tokens=6, do_sample=True, seed=7)
    again = generate_completions(model, tokenizer, prompts, max_new_tokens=6, do_sample=True, seed=7)
    assert first == again
    assert len(set(first)) > 1  # samples differ from each other within a call


def test_response_logprobs_match_a_hand_computation(model, tokenizer):
    prompt, response = "Sort the letters: c a b", "a b c"
    prompt_ids, response_ids = encode_prompt_response(tokenizer, prompt, response)
    assert tokenizer.decode(prompt_ids) == render_prompt(tokenizer, prompt)
    assert response_ids[-1] == tokenizer.eos_token_id  # the EOS that ends the turn is scored too
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + response_ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    expected = sum(logprobs[len(prompt_ids) + i - 1, token] for i, token in enumerate(response_ids))

    result = response_logprobs(model, tokenizer, [prompt, "Sort the letters: h g f e d"], [response, "d e f g h"])
    assert result.counts[0] == len(response_ids)
    assert result.sums[0].item() == pytest.approx(expected.item(), abs=1e-4)
    alone = response_logprobs(model, tokenizer, ["Sort the letters: h g f e d"], ["d e f g h"])
    assert result.sums[1].item() == pytest.approx(alone.sums[0].item(), abs=1e-4)  # padding changes nothing


def test_win_rate_of_a_model_against_itself_is_one_half(model, tokenizer):
    for normalize in (False, True):
        assert preference_win_rate(model, model, tokenizer, ROWS, normalize=normalize) == 0.5


def test_win_rate_rises_when_the_policy_learns_the_chosen_answers(tiny_model_dir, tokenizer):
    policy = load_causal_lm(ModelSpec(name_or_path=str(tiny_model_dir), lora=LoraSpec(r=4, dropout=0.0)), seed=0)
    # Fresh LoRA (B = 0) with the adapters-disabled reference: identical, so exactly one half.
    assert preference_win_rate(policy, None, tokenizer, ROWS) == 0.5
    texts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": "Sort the letters: " + r["prompt"].split(": ")[1]},
         {"role": "assistant", "content": r["chosen"]}], tokenize=False) for r in ROWS[:2]]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=2e-2)
    for _ in range(8):
        optimizer.zero_grad()
        policy(**batch, labels=labels).loss.backward()
        optimizer.step()
    margins = preference_margins(policy, None, tokenizer, ROWS[:2])
    assert (margins > 0).all()
    assert preference_win_rate(policy, None, tokenizer, ROWS[:2], normalize=True) == 1.0


def test_reward_scores_ignore_padding_and_accuracy_flips_with_the_pairs(tiny_model_dir, tokenizer):
    scorer = load_sequence_scorer(ModelSpec(name_or_path=str(tiny_model_dir)), trainable=False, seed=0)
    prompts = ["Sort the letters: c a b", "Sort the letters: h d e g f a"]
    responses = ["a b c", "a d e f g h"]
    together = score_texts(scorer, tokenizer, prompts, responses)
    alone = [score_texts(scorer, tokenizer, [p], [r])[0] for p, r in zip(prompts, responses)]
    assert together == pytest.approx(alone, abs=1e-5)

    accuracy = pairwise_accuracy(scorer, tokenizer, ROWS)
    swapped = [{"prompt": p, "chosen": r, "rejected": c} for p, c, r in (
        (row.get("prompt"), row.get("chosen"), row.get("rejected")) for row in ROWS[:3])]
    swapped_accuracy = pairwise_accuracy(scorer, tokenizer, swapped)
    assert pairwise_accuracy(scorer, tokenizer, ROWS[:3]) + swapped_accuracy == pytest.approx(1.0)
    assert 0.0 <= accuracy <= 1.0
    with torch.no_grad():
        scorer.score.weight.zero_()  # every score 0: ties are not wins
    assert pairwise_accuracy(scorer, tokenizer, ROWS) == 0.0


def test_perplexity_covers_every_weighted_assistant_turn(model, tokenizer):
    rows = [
        {"messages": [{"role": "user", "content": "Sort the letters: c a b"}, {"role": "assistant", "content": "a b c"},
                      {"role": "user", "content": "Sort the letters: b a"}, {"role": "assistant", "content": "a b"},
                      {"role": "user", "content": "Sort the letters: d c"},
                      {"role": "assistant", "content": "c d", "weight": 0}]},
        {"prompt": "Sort the letters: e f", "completion": "e f"},
    ]
    value = perplexity(model, tokenizer, rows)
    first = [{"role": "user", "content": "Sort the letters: c a b"}]
    second = first + [{"role": "assistant", "content": "a b c"}, {"role": "user", "content": "Sort the letters: b a"}]
    direct = response_logprobs(model, tokenizer, [first, second, "Sort the letters: e f"], ["a b c", "a b", "e f"])
    assert value == pytest.approx(math.exp(-direct.sums.sum().item() / direct.counts.sum().item()), rel=1e-5)
    assert 1.0 < value < len(tokenizer) * 10  # a random model: roughly uniform over the vocabulary


def test_rule_satisfaction_is_the_share_of_checked_greedy_answers(model, tokenizer):
    prompts = ["Sort the letters: c a b", "Sort the letters: h d e g f a"]
    samples = demo_samples(model, tokenizer, prompts, max_new_tokens=8)
    assert [s.correct for s in samples] == [check(s.prompt, s.completion) for s in samples]
    assert rule_satisfaction(model, tokenizer, prompts, max_new_tokens=8) == sum(s.correct for s in samples) / 2


def test_bleu_and_rouge():
    perfect = bleu_rouge(["a b c d e", "d e f g h"], ["a b c d e", "d e f g h"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(1.0)
    disjoint = bleu_rouge(["x y z"], ["a b c"])
    assert disjoint["bleu"] == pytest.approx(0.0) and disjoint["rouge1"] == 0.0
    partial = bleu_rouge(["a b c d"], ["a b c e"])
    assert 0.0 < partial["rouge1"] < 1.0
