"""`alignd up`: everything in one process on this machine (API, dispatcher, local Ray, SQLite)."""

from __future__ import annotations

import threading

import typer


def up_command(
    host: str = typer.Option("127.0.0.1", help="Address the API binds."),
    port: int = typer.Option(8000, help="Port of the API."),
) -> None:
    """Start alignd embedded under ALIGND_HOME; Ctrl-C stops it (running jobs resume on the next start)."""
    from services.settings import configure_logging, get_settings
    from services.workers.embedded import EmbeddedAlignd

    settings = get_settings()
    configure_logging(settings.log_level)
    instance = EmbeddedAlignd(settings.resolved_home, host=host, port=port, lease_seconds=settings.lease_seconds)
    typer.echo(f"starting alignd under {settings.resolved_home} ...")
    instance.start()
    typer.echo(f"alignd is up: {instance.url}  (dashboard {instance.url}/, API docs {instance.url}/docs)")
    typer.echo(f"API key: {instance.api_key}")
    typer.echo("Ctrl-C stops it.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        typer.echo("stopping alignd ...")
    finally:
        instance.stop()
        typer.echo("stopped")
