"""`alignd serve`: the REST API under uvicorn, after applying migrations."""

from __future__ import annotations

import typer


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="API processes; each has its own socket on the port (Linux)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the API against ALIGND_DATABASE_URL (migrations run first)."""
    import uvicorn

    from services.cli.api_processes import port_is_free, reuse_port_supported, serve_processes
    from services.settings import get_settings
    from services.store.migrate import upgrade_database

    upgrade_database(get_settings().resolved_database_url)
    if workers > 1 and reuse_port_supported():
        if not port_is_free(host, port):
            typer.echo(f"alignd serve: {host}:{port} is already in use; pick another --port", err=True)
            raise typer.Exit(1)
        raise typer.Exit(serve_processes(host, port, workers, log_level))
    if workers > 1:  # no SO_REUSEPORT here: uvicorn's workers, sharing one socket
        uvicorn.run("services.api.main:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level)
        return
    from services.api.main import create_app

    uvicorn.run(create_app(migrate=False), host=host, port=port, log_level=log_level)
