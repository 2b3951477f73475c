"""`alignd plan SPEC.yaml`: the per-GPU memory estimate of a spec and a set-up that fits."""

from __future__ import annotations

from pathlib import Path

import typer

COMPONENTS = ("weights", "gradients", "optimizer", "activations", "overhead")


def plan_command(
    spec_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Job spec in YAML."),
    gpu: str = typer.Option("H100-80GB", "--gpu", help="GPU model (e.g. A100-40GB) or a size such as 24GiB."),
    gpus: int | None = typer.Option(None, "--gpus", min=1, help="Number of GPUs (default: from the spec)."),
) -> None:
    """Print the memory estimate per GPU and the recommended method / ZeRO / batch set-up."""
    from rich.console import Console
    from rich.table import Table

    from alignment_core.planning import (
        ModelConfigUnavailable,
        ModelDoesNotFit,
        UnknownGpu,
        estimate_memory,
        gpu_info,
        recommend,
    )
    from alignment_core.planning.recommend import spec_on_gpus
    from services.cli.spec_file import read_spec_file, resolve_model_path

    console = Console()
    spec = read_spec_file(spec_path, None)
    resolve_model_path(spec)
    try:
        card = gpu_info(gpu)
        if gpus is not None:
            spec = spec_on_gpus(spec, gpus)
        estimate = estimate_memory(spec, card)
    except (UnknownGpu, ModelConfigUnavailable) as error:
        raise typer.BadParameter(str(error)) from None

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
    console.print(
        f"{estimate.method}, {estimate.total_params / 1e9:.3f}B parameters ({estimate.trainable_params:,} trained), "
        f"ZeRO-{estimate.zero_stage}, micro-batch {estimate.micro_batch_size} x {estimate.sequence_length} tokens, "
        f"gradient checkpointing {'on' if estimate.gradient_checkpointing else 'off'}"
    )
    for note in estimate.notes:
        console.print(f"[dim]- {note}[/dim]")

    try:
        advice = recommend(spec, gpus=estimate.num_gpus, gpu=card)
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
