"""Graphed checkpointing (modeling.graphed_layers) computes what torch's checkpointing computes.

On the CPU the graphs are recorded closures: the same static buffers, layer-to-layer chaining, shared gradient
buffers, capture on a shape's second call, eager fallback, and seeded LoRA dropout as on a GPU, only without
CUDA graph capture (bench/gpu's graph check runs the captured version against the eager one on the GPU).
"""

from __future__ import annotations

import pytest
import torch

from alignment_core.modeling.graphed_layers import graphed_checkpointing_of, install_graphed_checkpointing
from alignment_core.modeling.seeded_dropout import seeded_dropout


def _model(dropout: float, graphed: bool, max_shapes: int = 2):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    base.config.use_cache = False
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                            target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # nonzero B, so the adapters take part in the loss
            torch.nn.init.normal_(parameter, std=0.05)
    if graphed:
        install_graphed_checkpointing(model, max_shapes=max_shapes, cuda=False)
    model.train()
    return model


def _batches(steps: int, padded: bool):
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(1, 128, (2, 20), generator=generator)
        mask = torch.ones_like(ids)
        if padded:
            mask[1, 14:] = 0
        yield ids, mask


def _train(model, steps: int = 4, padded: bool = False, accumulate: int = 1):
    """Losses and adapter gradients of `steps` AdamW steps; each step sums `accumulate` forwards first."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(7)  # the dropout keys come from torch's CPU generator
    losses, grads = [], []
    for ids, mask in _batches(steps, padded):
        labels = ids.masked_fill(mask == 0, -100)
        total = sum(model(input_ids=ids, attention_mask=mask, labels=labels).loss for _ in range(accumulate))
        total.backward()
        losses.append(float(total.detach()))
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses, grads


def _assert_same(result, reference, rtol: float = 1e-6):
    assert result[0] == pytest.approx(reference[0], rel=rtol)
    for step_grads, reference_grads in zip(result[1], reference[1]):
        for grad, expected in zip(step_grads, reference_grads):
            torch.testing.assert_close(grad, expected, rtol=rtol * 10, atol=1e-7)


@pytest.mark.parametrize("padded", [False, True])
def test_graphed_layers_give_the_losses_and_gradients_of_torch_checkpointing(padded):
    # No dropout: the graphed path and transformers' own checkpointing compute the same function.
    reference = _train(_model(0.0, graphed=False), padded=padded)
    model = _model(0.0, graphed=True)
    result = _train(model, padded=padded)
    _assert_same(result, reference)
    stats = graphed_checkpointing_of(model).stats()
    # Captured at the first step, replayed at every step: 3 layers x 4 steps.
    assert stats["graph_shapes"] == 1 and stats["graph_replays"] == 12


def test_seeded_lora_dropout_is_the_same_in_graphs_and_in_eager_checkpointing():
    # With dropout the reference is the same model kept on the eager path (max_shapes=0), which draws the
    # same keys: the graphs must reproduce its masks exactly, in the forward and in the recompute.
    eager = _model(0.1, graphed=True, max_shapes=0)
    reference = _train(eager)
    assert graphed_checkpointing_of(eager).stats()["graph_replays"] == 0
    graphed = _model(0.1, graphed=True)
    result = _train(graphed)
    assert graphed_checkpointing_of(graphed).stats()["graph_replays"] == 12
    _assert_same(result, reference)
    # ... and dropout is really applied: without it the losses differ.
    assert result[0][0] != pytest.approx(_train(_model(0.0, graphed=True))[0][0], rel=1e-4)


def test_a_second_forward_before_the_backward_runs_eagerly_and_stays_correct():
    reference = _train(_model(0.0, graphed=False), accumulate=2)
    model = _model(0.0, graphed=True)
    result = _train(model, accumulate=2)
    _assert_same(result, reference)
    stats = graphed_checkpointing_of(model).stats()
    assert stats["graph_replays"] > 0 and stats["graph_eager_fallbacks"] > 0


def test_seeded_dropout_mask_is_bernoulli_and_reproducible():
    x = torch.ones(1 << 20)
    salt = torch.tensor(5)
    key_a, key_b = torch.tensor(123), torch.tensor(124)
    a = seeded_dropout(x, key_a, salt, 0.1)
    assert (a == 0).float().mean().item() == pytest.approx(0.1, abs=2e-3)
    assert sorted(a.unique().tolist()) == [0.0, pytest.approx(1 / 0.9)]
    assert torch.equal(a, seeded_dropout(x, key_a, salt, 0.1))
    b = seeded_dropout(x, key_b, salt, 0.1)
    other_site = seeded_dropout(x, key_a, torch.tensor(6), 0.1)
    # Neighbouring keys and sites give independent masks: both dropped in p^2 of the elements.
    for mask in (b, other_site):
        both = ((a == 0) & (mask == 0)).float().mean().item()
        assert both == pytest.approx(0.01, abs=1.5e-3)


def test_seeded_dropout_backward_applies_the_same_mask():
    x = torch.randn(64, 32, requires_grad=True)
    key, salt = torch.tensor(9), torch.tensor(1)
    out = seeded_dropout(x, key, salt, 0.3)
    grad = torch.randn_like(out)
    out.backward(grad)
    kept = out != 0
    torch.testing.assert_close(x.grad, torch.where(kept, grad / 0.7, torch.zeros_like(grad)))
