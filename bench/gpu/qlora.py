"""QLoRA on the 7.24B Llama shape, 1 x 512 tokens, LoRA r16 on q/v: the plain recipe against alignd's.

plain_*: the recipe most tutorials show (4-bit NF4 load, peft.prepare_model_for_kbit_training, which
upcasts norms, embeddings and the LM head to fp32, AdamW, loss from the full logits), checkpointing on/off.
alignd: 4-bit NF4 with everything else kept in bf16, Liger kernels (fused RMSNorm / SwiGLU / RoPE and the
fused linear cross-entropy that never materialises the logits), non-reentrant checkpointing, fused AdamW.
alignd_compile: the same with each decoder layer compiled (regional torch.compile).
stage: alignd's supervised stage with the QLoRA spec (on a GPU its checkpointed layers replay CUDA graphs,
performance.graphed_checkpointing; the result carries the graph counters and the capture time).
stage_eager: the stage with graphed checkpointing off (the stage of runs J / L).
stage_noexp: the stage with graphs but without expandable allocator segments for the load (run P's stage).
stage_chunk64: the stage with 64 MB dequantisation row blocks instead of 32 MB (modeling.chunked_4bit).
stage_fp32: the stage with peft's fp32 upcast of the frozen non-quantized weights (before run J; the stage
now keeps them in bf16, performance.prepare_kbit_model). stage_profile: the stage under torch.profiler.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.gpu.measure import StepClock, flops_per_token, summarize

SEQ = 512
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def _batches(ctx: dict, count: int, device: str):
    """`count` rows of SEQ token ids taken from the benchmark's SFT data (same rows for every variant)."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ctx["model_dir"])
    rows = [json.loads(line) for line in Path(ctx["data"]["sft"]).read_text().splitlines()[:count]]
    for row in rows:
        ids = tokenizer(row["prompt"] + " " + row["completion"], add_special_tokens=False)["input_ids"][:SEQ]
        yield torch.tensor([ids], device=device)


def _load(ctx: dict, device: str):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return AutoModelForCausalLM.from_pretrained(
        ctx["model_dir"],
        quantization_config=quant,
        dtype=torch.bfloat16,
        device_map={"": 0} if device == "cuda" else "cpu",
        attn_implementation="sdpa",
    )


def _lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model,
        LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )


def build(impl: str, ctx: dict, device: str):
    """The model and optimizer of one recipe."""
    import torch

    torch.manual_seed(0)
    model = _load(ctx, device)
    if impl.startswith("plain"):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=impl == "plain_ckpt")
        model = _lora(model)
        fused = False
    else:
        if device == "cuda":
            from liger_kernel.transformers import _apply_liger_kernel_to_instance

            _apply_liger_kernel_to_instance(
                model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=True
            )
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model = _lora(model)
        if impl == "alignd_compile":
            for layer in model.base_model.model.model.layers:
                layer.compile()
        fused = device == "cuda"
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, fused=fused)
    return model, optimizer


def run_loop(impl: str, ctx: dict) -> dict:
    device = ctx["device"]
    warmup, steps = ctx["warmup"], ctx["steps"]
    model, optimizer = build(impl, ctx, device)
    clock = StepClock(warmup)
    clock.start()
    for input_ids in _batches(ctx, warmup + steps, device):
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.losses.append(float(loss.detach()))  # one sync per step, as a training loop's logging does
        clock.mark()
    shape = ctx["shape"]
    flops = flops_per_token(ctx["params"], False, shape["layers"], shape["hidden"], SEQ)
    return summarize(clock, SEQ, flops, 4 * ctx["params"])


def run_stage(ctx: dict) -> dict:
    """alignd's supervised stage with the QLoRA spec (checkpointing on, as the memory goal needs)."""
    from bench.gpu.trl_cases import Case
    from bench.gpu.trl_cases import run_stage as run_trl_stage

    ctx = {**ctx, "stage_model": {"lora": LORA, "quantization": {"bits": 4}, "gradient_checkpointing": True}}
    return run_trl_stage(Case("qlora_8b", "supervised", True, 1, SEQ), ctx)


def _upcast_frozen_weights() -> None:
    """The stage as it was before run J: peft's k-bit preparation upcasts the non-quantized weights to fp32."""
    import alignment_core.stages.performance as performance

    prepare = performance.prepare_kbit_model
    performance.prepare_kbit_model = lambda model, checkpointing, keep_compute_dtype: prepare(
        model, checkpointing, False
    )


def _record_graphs(found: list) -> None:
    """Keep the GraphedCheckpointing the stage installs, to report its counters."""
    import alignment_core.modeling.graphed_layers as graphed_layers

    install = graphed_layers.install_graphed_checkpointing

    def recording(model, *args, **kwargs):
        graphs = install(model, *args, **kwargs)
        found.append(graphs)
        return graphs

    graphed_layers.install_graphed_checkpointing = recording


def run(impl: str, ctx: dict) -> dict:
    if impl == "stage_fp32":
        _upcast_frozen_weights()
    if impl == "stage_chunk64":  # 64 MB row blocks (two for a 7.24B MLP weight) instead of 32 MB
        import alignment_core.modeling.chunked_4bit as chunked_4bit

        chunked_4bit.DEFAULT_MAX_BYTES = 64 * 2**20
    if impl == "stage_noexp":  # graphs, without expandable segments for the load (the stage of run P)
        import alignment_core.stages.performance as performance

        performance.release_freed_pages_for_graphs = lambda: False
    if impl == "stage_eager":
        import alignment_core.stages.performance as performance

        performance.graphed_checkpointing = lambda model, device: False
    found: list = []
    _record_graphs(found)
    if impl.startswith("stage"):
        result = run_stage({**ctx, "profile": impl == "stage_profile"})
        result["graphs"] = found[0].stats() if found and found[0] is not None else None
        return result
    return run_loop(impl, ctx)
