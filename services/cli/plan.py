"""`alignd plan SPEC.yaml` or `alignd plan --model NAME`: the per-GPU memory estimate and a set-up that fits.

The model's shape comes from its config on disk, else alignd's table of known architectures, else the hub;
the shape options give or change it (a model nobody has downloaded, a what-if), and the output says which
source was used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

COMPONENTS = ("weights", "gradients", "optimizer", "activations", "overhead")
SHAPE_PANEL = "Model shape (when no config.json is on disk, or to change it)"
# ShapeOverrides' fields and the options that set them.
SHAPE_FLAGS = {"hidden_size": "--hidden-size", "num_layers": "--layers", "num_heads": "--heads",
               "num_kv_heads": "--kv-heads", "intermediate_size": "--intermediate-size", "vocab_size": "--vocab-size"}
# What `--method` accepts without a spec file (PPO needs a reward source: write a spec).
PLAN_METHODS = {"supervised": "supervised", "sft": "supervised", "dpo": "dpo", "reward_model": "reward_model",
                "rm": "reward_model", "reward": "reward_model"}
SHAPE_HINT = ("pass --params N (e.g. --params 7B) for a model of that size, or its shape: "
              "--hidden-size, --layers, --heads, --intermediate-size and --vocab-size")


def plan_command(
    spec_path: Path | None = typer.Argument(None, exists=True, dir_okay=False, metavar="SPEC.yaml",
                                            help="Job spec in YAML (or give --model)."),
    model: str | None = typer.Option(None, "--model", help="Hub id or model folder (replaces the spec's model)."),
    method: str | None = typer.Option(None, "--method", help="Without a spec: supervised (sft), dpo or reward_model "
                                      "(rm); default supervised."),
    gpu: str = typer.Option("H100-80GB", "--gpu", help="GPU model (e.g. A100-40GB) or a size such as 24GiB."),
    gpus: int | None = typer.Option(None, "--gpus", min=1, help="Number of GPUs (default: from the spec)."),
    params: str | None = typer.Option(None, "--params", rich_help_panel=SHAPE_PANEL,
                                      help="Parameter count (7B, 1.5B, 500M): as many layers as make it, on "
                                      "the model's widths (unknown model: the nearest known architecture's)."),
    hidden_size: int | None = typer.Option(None, "--hidden-size", min=1, rich_help_panel=SHAPE_PANEL),
    layers: int | None = typer.Option(None, "--layers", min=1, rich_help_panel=SHAPE_PANEL),
    heads: int | None = typer.Option(None, "--heads", min=1, rich_help_panel=SHAPE_PANEL,
                                     help="Attention heads."),
    kv_heads: int | None = typer.Option(None, "--kv-heads", min=1, rich_help_panel=SHAPE_PANEL,
                                        help="Key / value heads (default: --heads)."),
    intermediate_size: int | None = typer.Option(None, "--intermediate-size", min=1, rich_help_panel=SHAPE_PANEL,
                                                 help="MLP width."),
    vocab_size: int | None = typer.Option(None, "--vocab-size", min=1, rich_help_panel=SHAPE_PANEL),
) -> None:
    """Print the memory estimate per GPU and the recommended method / ZeRO / batch set-up."""
    from rich.console import Console
    from rich.table import Table

    from alignment_core.planning import (
        IncompleteShape,
        ModelConfigUnavailable,
        ModelDoesNotFit,
        ShapeOverrides,
        UnknownGpu,
        estimate_memory,
        gpu_info,
        parse_param_count,
        recommend,
    )
    from alignment_core.planning.recommend import spec_on_gpus
    from services.cli.spec_file import resolve_model_path

    console = Console()
    spec = _plan_spec(spec_path, model, method)
    resolve_model_path(spec)
    try:
        overrides = ShapeOverrides(
            params=parse_param_count(params) if params is not None else None, hidden_size=hidden_size,
            num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, intermediate_size=intermediate_size,
            vocab_size=vocab_size,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    try:
        card = gpu_info(gpu)
        if gpus is not None:
            spec = spec_on_gpus(spec, gpus)
        estimate = estimate_memory(spec, card, overrides=overrides)
    except UnknownGpu as error:
        raise typer.BadParameter(str(error)) from None
    except IncompleteShape as error:
        missing = ", ".join(SHAPE_FLAGS[field] for field in error.missing)
        raise typer.BadParameter(f"{error}: pass {missing} too (or --params N alone)") from None
    except ModelConfigUnavailable as error:
        raise typer.BadParameter(f"{error}; {SHAPE_HINT}") from None

    table = Table(title=f"{spec.model.name_or_path} · {spec.method_type} · {estimate.num_gpus} x {card.name}")
    table.add_column("per GPU")
    table.add_column("GiB", justify="right")
    for name in COMPONENTS:
        table.add_row(name, f"{estimate.gib[name]:.2f}")
    verdict = "[green]fits[/green]" if estimate.fits else "[red]does not fit[/red]"
    table.add_row(f"[bold]total[/bold] ({verdict})", f"[bold]{estimate.gib['total']:.2f}[/bold]")
    table.add_row("available", f"{card.memory_gib:.2f}")
    if estimate.cpu_offloaded:
        table.add_row("host memory (offloaded)", f"{estimate.gib['cpu_offloaded']:.2f}")
    console.print(table)
    console.print(f"model shape: {estimate.model_source}")
    console.print(
        f"{estimate.method}, {estimate.total_params / 1e9:.3f}B parameters ({estimate.trainable_params:,} trained), "
        f"ZeRO-{estimate.zero_stage}, micro-batch {estimate.micro_batch_size} x {estimate.sequence_length} tokens, "
        f"gradient checkpointing {'on' if estimate.gradient_checkpointing else 'off'}"
    )
    for note in estimate.notes:
        console.print(f"[dim]- {note}[/dim]")

    try:
        advice = recommend(spec, gpus=estimate.num_gpus, gpu=card, overrides=overrides)
    except ModelDoesNotFit as error:
        console.print(f"[red]no set-up fits:[/red] {error}")
        raise typer.Exit(1) from None
    console.print("\n[bold]recommended[/bold]: " + ", ".join([
        advice.method,
        f"ZeRO-{advice.zero_stage}" + (" + optimizer offload" if advice.offload_optimizer else "")
        + (" + parameter offload" if advice.offload_params else ""),
        f"gradient checkpointing {'on' if advice.gradient_checkpointing else 'off'}",
        f"micro-batch {advice.micro_batch_size} x accumulation {advice.gradient_accumulation_steps}",
        f"{advice.estimate.gib['total']:.2f} GiB per GPU",
    ]))
    for reason in advice.reasons:
        console.print(f"[dim]- {reason}[/dim]")
    if not estimate.fits:
        raise typer.Exit(1)


def _plan_spec(spec_path: Path | None, model: str | None, method: str | None) -> Any:
    """The spec to plan: the file's (its model replaced by --model), or a GPU job of --method on --model."""
    from alignment_core.specs import load_spec
    from services.cli.spec_file import read_spec_file

    if spec_path is not None:
        if method is not None:
            raise typer.BadParameter("--method is for planning without a spec file; the spec names its method")
        spec = read_spec_file(spec_path, None)
        if model is not None:
            spec.model.name_or_path = model
        return spec
    if model is None:
        raise typer.BadParameter("give a spec file (alignd plan SPEC.yaml) or a model (alignd plan --model NAME)")
    method_type = PLAN_METHODS.get((method or "supervised").lower())
    if method_type is None:
        raise typer.BadParameter(f"--method '{method}': use one of supervised (sft), dpo, reward_model (rm); "
                                 "plan PPO from a spec file (it needs a reward source)")
    # Training data does not change the estimate; data.max_length and the batch are the presets'.
    return load_spec({"method": method_type, "model": {"name_or_path": model},
                      "data": {"train_files": ["(planning only)"]}, "distribution": {"gpus_per_worker": 1}})
