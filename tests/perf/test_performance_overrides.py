"""The speed settings of alignment_core.stages.performance change speed, never the loss (CPU, tiny model)."""

from __future__ import annotations

import pytest
import torch

from alignment_core.specs import JobSpec
from alignment_core.stages.performance import model_load_overrides, precompute_reference, training_overrides


def _spec(method: str = "supervised", lora: bool = True, **method_fields) -> JobSpec:
    return JobSpec.model_validate({
        "method": {"type": method, **method_fields},
        "model": {"name_or_path": "alignd-tiny", "lora": {"r": 4} if lora else None},
        "data": {"train_files": ["x.jsonl"]},
    })


def test_cpu_keeps_fp32_and_no_gpu_only_settings():
    overrides = training_overrides(_spec(), "cpu")
    assert overrides["bf16"] is False
    assert overrides["use_liger_kernel"] is False
    assert overrides["gradient_checkpointing"] is False
    assert "optim" not in overrides
    assert model_load_overrides(_spec(), "cpu")["dtype"] == torch.float32


def test_checkpointing_follows_the_spec():
    spec = _spec()
    spec.model.gradient_checkpointing = True
    overrides = training_overrides(spec, "cpu")
    assert overrides["gradient_checkpointing"] is True
    assert overrides["gradient_checkpointing_kwargs"] == {"use_reentrant": False}


def test_trained_weights_stay_fp32_because_bf16_rounds_small_updates_away():
    # Why full fine-tuning never gets bf16 weights: one AdamW step at the full-fine-tuning preset rate.
    weight = torch.tensor(0.02)
    step = 2e-5
    assert (weight.bfloat16() + step).item() == weight.bfloat16().item()
    assert (weight + step).item() != weight.item()
    assert model_load_overrides(_spec(lora=False), "cpu")["dtype"] == torch.float32


def test_reference_precomputed_only_when_it_saves_work():
    assert precompute_reference(_spec("dpo")) is False  # one epoch: the same forward passes, earlier
    multi = _spec("dpo")
    multi.training.epochs = 3
    assert precompute_reference(multi) is True
    assert precompute_reference(_spec("dpo", precompute_ref_log_probs=True)) is True
    assert precompute_reference(_spec("supervised")) is False


def _loss_and_grads(model_dir, checkpointing: bool):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=generator)
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_turning_checkpointing_off_keeps_loss_and_gradients(tiny_model_dir):
    # TRL checkpoints by default; the override turns it off. Dropout is 0 in the tiny Llama, so the two
    # paths compute the same function and must agree to float32 rounding.
    loss_on, grads_on = _loss_and_grads(tiny_model_dir, checkpointing=True)
    loss_off, grads_off = _loss_and_grads(tiny_model_dir, checkpointing=False)
    torch.testing.assert_close(loss_on, loss_off, rtol=1e-6, atol=0)
    assert grads_on.keys() == grads_off.keys()
    for name in grads_on:
        torch.testing.assert_close(grads_on[name], grads_off[name], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_dpo_precomputed_reference_gives_the_same_losses(tiny_model_dir, tmp_path):
    """DPO with the reference scored up front trains exactly like DPO scoring it in every step."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"prompt": f"sort {word}", "chosen": " ".join(sorted(word)), "rejected": word}
            for word in ["dcba", "zyx", "hgfe", "qpo", "mlk", "tsr", "wvu", "jih"]]

    def losses(precompute: bool) -> list[float]:
        arguments = dict(output_dir=str(tmp_path / str(precompute)), per_device_train_batch_size=4, max_steps=3,
                         logging_steps=1, report_to="none", use_cpu=True, seed=0, save_strategy="no",
                         learning_rate=1e-3)
        arguments.update(training_overrides(_spec("dpo", precompute_ref_log_probs=precompute), "cpu"))
        assert arguments.get("precompute_ref_log_probs", False) is False  # CPU: the stage's own choice stands
        config = DPOConfig(**arguments, precompute_ref_log_probs=precompute)
        trainer = DPOTrainer(model=str(tiny_model_dir), args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer,
                             peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
        trainer.train()
        return [row["loss"] for row in trainer.state.log_history if "loss" in row]

    plain, precomputed = losses(False), losses(True)
    assert len(plain) == 3
    assert precomputed == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_adapter_inputs_left_in_bf16_under_autocast_give_the_same_loss_and_gradients(dropout):
    # The GPU setting, on the CPU's bf16 autocast: bf16 frozen base, fp32 adapters (peft's default).
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment_core.stages.performance import keep_adapter_inputs_in_compute_dtype

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # nonzero B, so the adapters take part in the loss
            torch.nn.init.normal_(parameter, std=0.02)
    model.train()
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # the same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach().float(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    reference_loss, reference_grads = loss_and_grads()
    assert keep_adapter_inputs_in_compute_dtype(model, autocast_bf16=True) == 14  # 7 linears x 2 layers
    loss, grads = loss_and_grads()
    assert all(grad.dtype == torch.float32 for grad in grads)
    if dropout == 0:  # the cast bf16 -> fp32 -> bf16 is exact: the same numbers
        assert torch.equal(loss, reference_loss)
        for grad, reference in zip(grads, reference_grads):
            torch.testing.assert_close(grad, reference, rtol=2e-2, atol=1e-5)
    else:
        # Dropout draws its mask for a bf16 tensor differently from an fp32 one: other masks from the same
        # distribution, so the loss agrees to rounding and the gradients only in size.
        torch.testing.assert_close(loss, reference_loss, rtol=1e-3, atol=0)
        norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
        reference_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in reference_grads]))
        torch.testing.assert_close(norm, reference_norm, rtol=0.1, atol=0)
    assert keep_adapter_inputs_in_compute_dtype(model, autocast_bf16=False) == 0


def test_kbit_base_kept_in_bf16_gives_the_loss_and_gradients_of_peft_upcast():
    # The QLoRA base on a bf16 GPU, on the CPU's bf16 autocast: peft's k-bit preparation upcasts the frozen
    # non-quantized weights (here: all of a bf16 base) to fp32; prepare_kbit_model keeps them bf16. The bf16
    # weights are exact in fp32, so only the residual stream's precision differs: bf16 rounding.
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment_core.stages.performance import prepare_kbit_model

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))

    def prepared(keep: bool):
        torch.manual_seed(0)
        base = prepare_kbit_model(LlamaForCausalLM(config).to(torch.bfloat16), True, keep_compute_dtype=keep)
        frozen = {p.dtype for p in base.parameters()}
        lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        model = get_peft_model(base, lora)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # nonzero B, so the adapters take part in the loss
                torch.nn.init.normal_(parameter, std=0.02)
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = [p.grad.float() for p in model.parameters() if p.requires_grad]
        return frozen, loss.detach().float(), grads, model

    upcast_dtypes, upcast_loss, upcast_grads, _ = prepared(keep=False)
    kept_dtypes, kept_loss, kept_grads, kept_model = prepared(keep=True)
    assert upcast_dtypes == {torch.float32} and kept_dtypes == {torch.bfloat16}
    assert kept_model.base_model.model.model.gradient_checkpointing
    assert kept_loss == pytest.approx(upcast_loss.item(), rel=5e-3)
    for kept, upcast in zip(kept_grads, upcast_grads, strict=True):
        assert torch.linalg.norm(kept - upcast) <= 3e-2 * torch.linalg.norm(upcast)


def test_cuda_graphs_is_a_spec_setting_that_needs_checkpointing_and_a_gpu():
    from pydantic import ValidationError

    from alignment_core.specs import ModelSpec
    from alignment_core.stages.performance import graphed_checkpointing

    qlora = {"name_or_path": "alignd-tiny", "lora": {"r": 4}, "quantization": {"bits": 4},
             "gradient_checkpointing": True}
    assert ModelSpec.model_validate(qlora).cuda_graphs == "auto"
    for choice in ("auto", "on", "off"):
        spec = ModelSpec.model_validate({**qlora, "cuda_graphs": choice})
        assert graphed_checkpointing(spec, "cpu") is False  # graphs are a CUDA feature
    with pytest.raises(ValidationError, match="cuda_graphs"):
        ModelSpec.model_validate({**qlora, "cuda_graphs": "always"})
