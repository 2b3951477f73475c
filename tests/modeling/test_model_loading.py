"""Loading, LoRA / QLoRA, the reference model and save / reload round trips, on the tiny model offline."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from alignment_core.modeling.loading import (
    load_causal_lm,
    load_sequence_scorer,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from alignment_core.modeling.reference import NotAnAdapterModel, disabled_adapters, load_reference
from alignment_core.modeling.saving import save_model
from alignment_core.specs import DistributionSpec, LoraSpec, ModelSpec, QuantizationSpec

PROMPTS = ["Sort the letters: c a b", "Sort the letters: h d e g"]


def _batch(tokenizer):
    texts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": p}, {"role": "assistant", "content": "a b c"}], tokenize=False,
    ) for p in PROMPTS]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _train_steps(model, batch, steps: int = 3, lr: float = 5e-2) -> list[float]:
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _logits(model, batch) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(**batch).logits
    model.train(was_training)
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tokenizer, tmp_path_factory):
    """A LoRA policy trained a few steps and saved with merged weights: (folder, its logits on the batch)."""
    batch = _batch(tokenizer)
    policy = load_causal_lm(ModelSpec(name_or_path=str(tiny_model_dir), lora=LoraSpec(r=4)), seed=0)
    _train_steps(policy, batch)
    out_dir = save_model(policy, tokenizer, tmp_path_factory.mktemp("sft") / "model", merge_adapters=True)
    return out_dir, _logits(policy, batch)


def test_device_and_dtype_resolution():
    assert resolve_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(DistributionSpec(gpus_per_worker=1)) == torch.device("cpu")
    assert resolve_dtype(ModelSpec(name_or_path="x"), torch.device("cpu")) == torch.float32
    assert resolve_dtype(ModelSpec(name_or_path="x", dtype="bfloat16"), "cpu") == torch.bfloat16
    # Weights that all train stay fp32 even on a bf16 GPU: bf16 would round small AdamW updates away.
    assert resolve_dtype(ModelSpec(name_or_path="x"), "cuda", trainable=True) == torch.float32


def test_tokenizer_without_pad_or_template_gets_defaults(tiny_model_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config.pop("pad_token", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))

    tokenizer = load_tokenizer(str(bare))
    assert tokenizer.pad_token == tokenizer.eos_token
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a b"}],
        return_dict=True, return_assistant_tokens_mask=True,
    )
    marked = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "a b" + tokenizer.eos_token


def test_full_model_save_reload_round_trip(tiny_model_dir, tokenizer, tmp_path):
    spec = ModelSpec(name_or_path=str(tiny_model_dir))
    model = load_causal_lm(spec)
    assert not hasattr(model, "peft_config") and model.training
    batch = _batch(tokenizer)
    _train_steps(model, batch, steps=1, lr=1e-3)
    save_model(model, tokenizer, tmp_path / "full")
    card = json.loads((tmp_path / "full" / "alignd_model.json").read_text())
    assert card["kind"] == "causal_lm" and card["adapter"] is False
    reloaded = load_causal_lm(ModelSpec(name_or_path=str(tmp_path / "full")), trainable=False)
    assert not reloaded.training and not any(p.requires_grad for p in reloaded.parameters())
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch))


def test_lora_adapter_and_merged_reload_match_trained_policy(sft_adapter, tokenizer):
    folder, trained_logits = sft_adapter
    card = json.loads((folder / "alignd_model.json").read_text())
    assert card == {**card, "kind": "causal_lm", "adapter": True, "merged": "merged"}
    assert (folder / "adapter_config.json").exists() and (folder / "merged" / "config.json").exists()
    batch = _batch(tokenizer)
    for source in (folder, folder / "merged"):
        reloaded = load_causal_lm(ModelSpec(name_or_path=str(source)), trainable=False)
        torch.testing.assert_close(_logits(reloaded, batch), trained_logits, atol=1e-5, rtol=1e-5)


def test_adapter_folder_without_merged_weights_is_merged_on_load(sft_adapter, tokenizer, tmp_path):
    folder, trained_logits = sft_adapter
    adapter_only = tmp_path / "adapter_only"
    shutil.copytree(folder, adapter_only, ignore=shutil.ignore_patterns("merged"))
    # The chain SFT -> DPO: a new LoRA on top of the merged SFT adapter; its base is the SFT model.
    policy = load_causal_lm(ModelSpec(name_or_path=str(adapter_only), lora=LoraSpec(r=4)), seed=1)
    batch = _batch(tokenizer)
    with disabled_adapters(policy) as reference:
        torch.testing.assert_close(_logits(reference, batch), trained_logits, atol=1e-5, rtol=1e-5)
    assert policy.peft_config["default"].base_model_name_or_path == str(adapter_only.resolve())


def test_lora_reference_is_base_with_adapters_disabled(tiny_model_dir, tokenizer):
    spec = ModelSpec(name_or_path=str(tiny_model_dir), lora=LoraSpec(r=4))
    policy = load_causal_lm(spec, seed=0)
    batch = _batch(tokenizer)
    _train_steps(policy, batch, steps=2)
    base = load_causal_lm(ModelSpec(name_or_path=str(tiny_model_dir)), trainable=False)
    assert load_reference(spec, policy, "cpu") is None
    with disabled_adapters(policy) as reference:
        torch.testing.assert_close(_logits(reference, batch), _logits(base, batch))
    assert not torch.allclose(_logits(policy, batch), _logits(base, batch))  # adapters are back on
    with pytest.raises(NotAnAdapterModel), disabled_adapters(base):
        pass
    frozen = load_reference(ModelSpec(name_or_path=str(tiny_model_dir)), base, "cpu")
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())


def test_qlora_4bit_trains_adapter_weights_after_an_inference_forward(tiny_model_dir, tokenizer):
    bnb = pytest.importorskip("bitsandbytes")
    spec = ModelSpec(name_or_path=str(tiny_model_dir), lora=LoraSpec(r=4), quantization=QuantizationSpec())
    policy = load_causal_lm(spec, seed=0)
    linear4bit = [m for m in policy.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4bit, "base linears should be 4-bit"
    assert linear4bit[0].weight.quant_state.quant_type == "nf4"
    # The guard against the AVX512-BF16 repacking trap (STACK.md); this CPU may lack the instructions.
    assert not any(m.support_avx512bf16_for_cpu for m in linear4bit)
    batch = _batch(tokenizer)
    _logits(policy, batch)  # an evaluation before training: the forward that repacks weights on some CPUs
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in linear4bit)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    losses = _train_steps(policy, batch, steps=4, lr=1e-2)
    changed = {n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(before[n], p)}
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    assert changed == set(before)
    assert losses[-1] < losses[0]


def test_qlora_continues_from_adapter_folder(sft_adapter, tokenizer):
    pytest.importorskip("bitsandbytes")
    folder, trained_logits = sft_adapter
    spec = ModelSpec(name_or_path=str(folder), lora=LoraSpec(r=4), quantization=QuantizationSpec(bits=4))
    policy = load_causal_lm(spec)
    with disabled_adapters(policy) as reference:
        logits = _logits(reference, _batch(tokenizer))
    # 4-bit rounding of the merged weights: close to, not equal to, the full-precision model.
    assert (logits - trained_logits).abs().mean() < 0.05


def test_scorer_from_causal_checkpoint_is_seeded_and_round_trips(tiny_model_dir, tokenizer, tmp_path):
    spec = ModelSpec(name_or_path=str(tiny_model_dir), lora=LoraSpec(r=4))
    scorer = load_sequence_scorer(spec, seed=3)
    base = scorer.get_base_model()
    assert base.config.num_labels == 1 and base.config.pad_token_id == tokenizer.pad_token_id
    head = [n for n, p in scorer.named_parameters() if p.requires_grad and "score" in n]
    assert head, "the new score head must be trainable with LoRA"
    same_seed = load_sequence_scorer(ModelSpec(name_or_path=str(tiny_model_dir)), seed=3, trainable=False)
    other_seed = load_sequence_scorer(ModelSpec(name_or_path=str(tiny_model_dir)), seed=4, trainable=False)
    torch.testing.assert_close(base.score.weight, same_seed.score.weight)
    assert not torch.equal(same_seed.score.weight, other_seed.score.weight)

    batch = _batch(tokenizer)
    scorer.train()
    optimizer = torch.optim.AdamW([p for p in scorer.parameters() if p.requires_grad], lr=1e-2)
    scorer(**batch).logits.sum().backward()
    optimizer.step()
    trained = _logits(scorer, batch)
    assert trained.shape == (2, 1)
    save_model(scorer, tokenizer, tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "alignd_model.json").read_text())["kind"] == "sequence_scorer"
    reloaded = load_sequence_scorer(ModelSpec(name_or_path=str(tmp_path / "rm")), trainable=False)
    torch.testing.assert_close(_logits(reloaded, batch), trained, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_and_attention_kernel_are_honoured(tiny_model_dir, tokenizer):
    spec = ModelSpec(name_or_path=str(tiny_model_dir), lora=LoraSpec(r=4), gradient_checkpointing=True,
                     attn_implementation="eager")
    policy = load_causal_lm(spec, seed=0)
    base = policy.get_base_model()
    assert base.is_gradient_checkpointing and base.config.use_cache is False
    assert base.config._attn_implementation == "eager"
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_B" in n}
    _train_steps(policy, _batch(tokenizer), steps=1, lr=1e-2)
    assert all(not torch.equal(before[n], p) for n, p in policy.named_parameters() if "lora_B" in n)


def test_reward_model_chained_on_an_sft_adapter_round_trips(sft_adapter, tokenizer, tmp_path):
    folder, _ = sft_adapter
    batch = _batch(tokenizer)
    adapter_only = tmp_path / "sft_adapter_only"
    shutil.copytree(folder, adapter_only, ignore=shutil.ignore_patterns("merged"))
    for source in (folder, adapter_only):  # merged weights beside the adapter, or merged on load
        scorer = load_sequence_scorer(ModelSpec(name_or_path=str(source), lora=LoraSpec(r=4)), seed=5)
        scorer.train()
        optimizer = torch.optim.AdamW([p for p in scorer.parameters() if p.requires_grad], lr=1e-2)
        scorer(**batch).logits.sum().backward()
        optimizer.step()
        out_dir = save_model(scorer, tokenizer, tmp_path / f"rm-{source.name}")
        reloaded = load_sequence_scorer(ModelSpec(name_or_path=str(out_dir)), trainable=False)
        torch.testing.assert_close(_logits(reloaded, batch), _logits(scorer, batch), atol=1e-5, rtol=1e-5)


def test_an_adapter_on_the_built_in_model_loads_with_plain_peft(tokenizer, tmp_path, monkeypatch):
    """Outside alignd, peft finds the base in adapter_config.json: the alias 'alignd-tiny' must not be it."""
    from peft import AutoPeftModelForCausalLM

    from alignment_core.modeling.model_folders import adapter_base

    monkeypatch.setenv("ALIGND_HOME", str(tmp_path / "home"))
    policy = load_causal_lm(ModelSpec(name_or_path="alignd-tiny", lora=LoraSpec(r=4)), seed=0)
    out_dir = save_model(policy, tokenizer, tmp_path / "adapter")
    written = json.loads((out_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert written == str(tmp_path / "home" / "models" / "alignd-tiny")
    assert adapter_base(out_dir) == "alignd-tiny"  # alignd's card keeps the alias (any ALIGND_HOME resolves it)
    assert policy.peft_config["default"].base_model_name_or_path == "alignd-tiny"  # the live model is unchanged
    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(out_dir))
    batch = _batch(tokenizer)
    torch.testing.assert_close(_logits(reloaded, batch), _logits(policy, batch))


def test_a_lora_output_without_merged_weights_trains_in_full(tiny_model_dir, tokenizer, tmp_path):
    """PPO / SFT / DPO without `lora` on a LoRA job's output: the adapter is merged and every weight trains
    (peft's inference load had left them all frozen: 'nothing to train')."""
    policy = load_causal_lm(ModelSpec(name_or_path=str(tiny_model_dir), lora=LoraSpec(r=4)), seed=0)
    _train_steps(policy, _batch(tokenizer))
    adapter_dir = save_model(policy, tokenizer, tmp_path / "adapter")
    assert not (adapter_dir / "merged").exists()

    full = load_causal_lm(ModelSpec(name_or_path=str(adapter_dir)), seed=0)
    assert all(parameter.requires_grad for parameter in full.parameters())
    torch.testing.assert_close(_logits(full, _batch(tokenizer)), _logits(policy, _batch(tokenizer)),
                               rtol=1e-4, atol=1e-4)
    losses = _train_steps(full, _batch(tokenizer), steps=3, lr=1e-2)
    assert losses[-1] < losses[0]
    frozen = load_causal_lm(ModelSpec(name_or_path=str(adapter_dir)), trainable=False)
    assert not any(parameter.requires_grad for parameter in frozen.parameters())
