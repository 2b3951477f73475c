"""Correctness of graphed checkpointing on the GPU: captured CUDA graphs against the eager paths, same batches.

A QLoRA model as the stage loads it (4-bit NF4 base, LoRA r16 q/v, checkpointing, bf16 autocast, AdamW), four
steps on fixed 1 x SEQ batches:
- dropout 0.05: graphs against the same model on the eager path (max_shapes=0: torch's checkpoint, the same
  seeded dropout keys), which must agree to rounding;
- dropout 0: graphs against transformers' own checkpointing (torch.utils.checkpoint, no seeded dropout);
- the graphs once more without an attention mask (reports whether capture succeeded).
A comparison only counts when the graph run's stats show replays and no error.
Reports the largest relative difference of the losses and of the adapter gradients per pair.
"""

from __future__ import annotations

SEQ = 512


def _load(ctx: dict, dropout: float, install: str):
    import torch

    from alignment_core.modeling.graphed_layers import install_graphed_checkpointing
    from alignment_core.modeling.loading import load_causal_lm
    from alignment_core.specs import ModelSpec

    spec = ModelSpec.model_validate({
        "name_or_path": ctx["model_dir"],
        "lora": {"r": 16, "alpha": 32, "dropout": dropout, "target_modules": ["q_proj", "v_proj"]},
        "quantization": {"bits": 4} if ctx["device"] == "cuda" else None,
        "gradient_checkpointing": True,
    })
    import alignment_core.stages.performance as performance

    decide = performance.graphed_checkpointing
    performance.graphed_checkpointing = lambda model, device: False  # install by hand below
    try:
        model = load_causal_lm(spec, ctx["device"], trainable=True, seed=0)
    finally:
        performance.graphed_checkpointing = decide
    from alignment_core.modeling.chunked_4bit import chunk_4bit_linears

    # As the stage does with graphs; 8 MB blocks so the 1.1B shape's weights (8-23 MB in bf16) are cut too.
    chunked = chunk_4bit_linears(model, max_bytes=8 * 2**20) if ctx["device"] == "cuda" else 0
    model._alignd_chunked_linears = chunked
    if install == "graphs":
        install_graphed_checkpointing(model)
    elif install == "eager":
        install_graphed_checkpointing(model, max_shapes=0)
    from alignment_core.stages.performance import keep_adapter_inputs_in_compute_dtype

    keep_adapter_inputs_in_compute_dtype(model, ctx["device"] == "cuda")
    model.train()
    return model, torch


def _train(
    ctx: dict, dropout: float, install: str, mask: bool = True, steps: int = 4
) -> tuple[list[float], list, dict]:
    model, torch = _load(ctx, dropout, install)
    device = ctx["device"]
    seq = 48 if ctx.get("tiny") else SEQ
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    torch.manual_seed(7)  # the seeded dropout keys
    losses, grads = [], []
    for _ in range(steps):
        ids = torch.randint(0, vocab, (1, seq), generator=generator).to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            # As TRL's collators do, an attention mask (all ones here); without one see run()'s last check.
            extra = {"attention_mask": torch.ones_like(ids)} if mask else {}
            loss = model(input_ids=ids, labels=ids, **extra).loss
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append([p.grad.detach().float().clone() for p in model.parameters() if p.requires_grad])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    from alignment_core.modeling.graphed_layers import graphed_checkpointing_of

    found = graphed_checkpointing_of(model)
    stats = found.stats() if found is not None else {}
    stats["chunked_linears"] = getattr(model, "_alignd_chunked_linears", None)
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return losses, grads, stats


def _difference(a: tuple, b: tuple) -> dict:
    import torch

    loss_rel = max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a[0], b[0]))
    grad_rel = 0.0
    for step_a, step_b in zip(a[1], b[1]):
        flat_a = torch.cat([g.flatten() for g in step_a])
        flat_b = torch.cat([g.flatten() for g in step_b])
        grad_rel = max(grad_rel, float(torch.linalg.vector_norm(flat_a - flat_b) / torch.linalg.vector_norm(flat_b)))
    return {"max_loss_rel": loss_rel, "max_grad_rel": grad_rel, "losses": a[0], "reference_losses": b[0]}


def _kernel_check(ctx: dict) -> dict:
    """The Triton dropout kernel against the torch arithmetic it implements: identical outputs on fresh data."""
    import torch

    from alignment_core.modeling import seeded_dropout

    if ctx["device"] != "cuda":
        return {}
    x = torch.randn(3, 517, 4096, device="cuda", dtype=torch.bfloat16)
    key = torch.tensor(123456789, device="cuda")
    salt = torch.tensor(77, device="cuda")
    fast = seeded_dropout._kernel(x)(x, key, salt, 0.05)
    reference = seeded_dropout._apply(x, key, salt, 0.05)
    return {"triton_equals_torch": bool(torch.equal(fast, reference)),
            "dropped_share": float((fast == 0).float().mean()), "triton_used": seeded_dropout._TRITON.get("ok")}


def run(ctx: dict) -> dict:
    kernel = _kernel_check(ctx)
    graphs_05 = _train(ctx, 0.05, "graphs")
    eager_05 = _train(ctx, 0.05, "eager")
    graphs_0 = _train(ctx, 0.0, "graphs")
    torch_0 = _train(ctx, 0.0, "none")
    no_mask = _train(ctx, 0.05, "graphs", mask=False)
    return {
        "dropout_0.05_graphs_vs_eager": _difference(graphs_05, eager_05),
        "dropout_0_graphs_vs_torch_checkpoint": _difference(graphs_0, torch_0),
        "graph_stats": graphs_05[2],
        "graph_stats_dropout_0": graphs_0[2],
        "eager_stats": eager_05[2],
        "graph_stats_without_attention_mask": no_mask[2],
        "dropout_kernel": kernel,
    }
