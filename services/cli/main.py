"""The `alignd` command line: one typer app; each command group lives in its own module."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="alignd: fine-tune and align language models.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"alignd {version('alignd')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", envvar="ALIGND_VERBOSE",
                                 help="Also show the libraries' own notes and deprecation warnings "
                                 "(transformers, DeepSpeed, bitsandbytes, Ray)."),
) -> None:
    """alignd: fine-tune and align language models."""
    if not verbose:
        from services.cli.library_logs import quiet_library_logs

        quiet_library_logs()


@app.command("make-tiny-model")
def make_tiny_model_command(
    directory: Path = typer.Argument(..., help="Folder to write the model and tokenizer into."),
    hidden_size: int = typer.Option(64, help="Hidden size of the tiny Llama."),
    layers: int = typer.Option(2, help="Number of transformer layers."),
    heads: int = typer.Option(4, help="Attention heads."),
    seed: int = typer.Option(0, help="Seed for the random weights."),
) -> None:
    """Build a tiny Llama-architecture model and a locally trained tokenizer (no network)."""
    from alignment_core.modeling.tiny import make_tiny_model

    path = make_tiny_model(directory, hidden_size=hidden_size, num_layers=layers, num_heads=heads, seed=seed)
    typer.echo(f"tiny model written to {path}")


@app.command("make-demo-data")
def make_demo_data_command(
    directory: Path = typer.Argument(..., help="Folder to write the demo JSONL files into."),
    seed: int = typer.Option(0, help="Seed of the generator."),
    train_size: int = typer.Option(2000, help="Training problems."),
    eval_size: int = typer.Option(200, help="Held-out problems."),
) -> None:
    """Write the demo task's SFT, preference, prompt and held-out files."""
    from alignment_core.demo.task import write_demo_data

    paths = write_demo_data(directory, seed=seed, train_size=train_size, eval_size=eval_size)
    for name, path in paths.items():
        typer.echo(f"{name:12s} {path}")


from services.cli.keys import keys_app  # noqa: E402
from services.cli.migrate import migrate_command  # noqa: E402
from services.cli.serve import serve_command  # noqa: E402

app.command("serve")(serve_command)
app.command("migrate")(migrate_command)
app.add_typer(keys_app, name="keys")

from services.cli.demo import demo_command  # noqa: E402
from services.cli.up import up_command  # noqa: E402
from services.cli.worker import worker_command  # noqa: E402

app.command("worker")(worker_command)
app.command("up")(up_command)
app.command("demo")(demo_command)

from services.cli.train import train_command  # noqa: E402

app.command("train")(train_command)

from services.cli.plan import plan_command  # noqa: E402

app.command("plan")(plan_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
