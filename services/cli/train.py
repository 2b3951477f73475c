"""`alignd train SPEC.yaml --output-dir DIR`: run one stage in this process (no database, no Ray).

Writes checkpoints, metrics.jsonl and result.json to DIR. For specs on the built-in demo data
(``alignd-demo:*`` paths) result.json also holds held-out demo metrics before and after training.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import typer

from services.cli.spec_file import check_spec_inputs, read_spec_file

RUN_SPEC_FILE = "spec.json"  # the spec a folder's checkpoints were trained with
# What a resumed run must share with the run that wrote the checkpoints (training settings may differ).
RUN_IDENTITY = ("method", "model", "data")


def clear_previous_run(output_dir: Path) -> None:
    """--no-resume: start over, so old checkpoints and metrics do not mix with the new run."""
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    for name in ("metrics.jsonl", "result.json", RUN_SPEC_FILE):
        (output_dir / name).unlink(missing_ok=True)


def claim_output_dir(output_dir: Path, spec: Any) -> None:
    """Refuse to resume another spec's checkpoints (a DPO run would load an SFT run's state and stop at once);
    otherwise note this spec as the folder's."""
    current = spec.model_dump(mode="json")
    recorded_path = output_dir / RUN_SPEC_FILE
    if recorded_path.is_file() and (output_dir / "checkpoints").is_dir():
        recorded = json.loads(recorded_path.read_text())
        changed = [part for part in RUN_IDENTITY if recorded.get(part) != current.get(part)]
        if changed:
            raise typer.BadParameter(
                f"{output_dir} holds checkpoints of a run with another {' / '.join(changed)} "
                f"(method {recorded.get('method', {}).get('type')}, model "
                f"{recorded.get('model', {}).get('name_or_path')}); choose another --output-dir, or --no-resume "
                "to start over there", param_hint="--output-dir")
    recorded_path.write_text(json.dumps(current, indent=2))


def user_errors() -> tuple[type[BaseException], ...]:
    """What a stage raises about the user's input (data, model files, chat template, reward source, settings).

    Each carries a message naming what to fix, so the CLI prints that message alone; anything else is a bug in
    alignd and keeps its traceback.
    """
    from alignment_core.data.demo_sources import UnknownDemoFile
    from alignment_core.data.formats import DataFormatError
    from alignment_core.data.tokenization import ChatTemplateError, NoUsableExamples
    from alignment_core.modeling.model_folders import ModelFolderError
    from alignment_core.modeling.reference import NotAnAdapterModel
    from alignment_core.ppo.checkpoint import CheckpointMismatch
    from alignment_core.rewards.client import RewardSourceError
    from alignment_core.stages import MethodNotAvailable
    from alignment_core.stages.deepspeed_ops import StaleOpBuildLock
    from alignment_core.stages.ppo import PpoConfigError
    from alignment_core.stages.trainer_bridge import NonFiniteLoss
    from alignment_core.stages.training_arguments import TrainingSpecError

    return (DataFormatError, NoUsableExamples, ChatTemplateError, MethodNotAvailable, UnknownDemoFile,
            ModelFolderError, NotAnAdapterModel, CheckpointMismatch, RewardSourceError, PpoConfigError,
            TrainingSpecError, NonFiniteLoss, StaleOpBuildLock, OSError)


def verbose_requested(context: typer.Context) -> bool:
    """`alignd --verbose train ...` or ALIGND_VERBOSE=1: show the traceback of a user error too."""
    return bool(context.find_root().params.get("verbose"))


def train_command(
    ctx: typer.Context,
    spec_path: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="SPEC.yaml",
                                    help="Job spec in YAML."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Folder for checkpoints, metrics and the model."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the newest checkpoint in DIR."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Override training.max_steps."),
    demo_eval: bool = typer.Option(True, "--demo-eval/--no-demo-eval",
                                   help="Held-out demo metrics before and after (demo data only)."),
) -> None:
    """Run one training stage locally, with a progress bar."""
    import datasets
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers.utils import logging as transformers_logging

    from alignment_core.context import LocalContext
    from alignment_core.evaluation.demo_report import demo_metrics, uses_demo_data
    from alignment_core.stages import run_stage

    # Ours is the one bar: datasets' map passes and transformers' shard saving would each draw their own.
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    console = Console()
    spec = read_spec_file(spec_path, max_steps)
    check_spec_inputs(spec)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        clear_previous_run(output_dir)
    claim_output_dir(output_dir, spec)
    context = LocalContext(output_dir, resume=resume)
    start_model = spec.model.name_or_path
    demo = demo_eval and uses_demo_data(spec)
    before: dict[str, float] = {}
    if demo:
        console.print("[dim]held-out demo metrics of the starting model...[/dim]")
        before = demo_metrics(spec, start_model)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("step {task.completed:.0f}"),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(spec.method.type, total=spec.training.max_steps, loss="")

        def show(step: int, metrics: dict[str, float]) -> None:
            loss = metrics.get("loss", metrics.get("eval_loss"))
            progress.update(task, completed=step, loss=f"loss {loss:.4f}" if loss is not None else "")

        context.on_report.append(show)
        try:
            result = run_stage(spec, context)
        except user_errors() as error:
            if verbose_requested(ctx):
                raise
            progress.stop()
            console.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
            raise typer.Exit(1) from None

    report: dict[str, Any] = {"method": spec.method.type, **result.to_json()}
    if demo and result.model_dir is not None:
        reference = start_model if spec.method.type == "dpo" else None
        after = demo_metrics(spec, str(result.model_dir), reference_path=reference)
        report["demo"] = {"before": before, "after": after}
    (output_dir / "result.json").write_text(json.dumps(report, indent=2))
    console.print(f"[bold]{result.status}[/bold] after {result.steps} steps; model: {result.model_dir}")
    if "demo" in report:
        console.print(f"held-out demo metrics: before {before} after {report['demo']['after']}")
    console.print(f"result: {output_dir / 'result.json'}")
