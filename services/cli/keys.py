"""`alignd keys create --project NAME`: a new API key, printed alone on the last line."""

from __future__ import annotations

import typer

keys_app = typer.Typer(help="Manage API keys (run where the database is reachable).", no_args_is_help=True)


@keys_app.command("create")
def create_key_command(
    project: str = typer.Option(..., "--project", help="Project name; created if missing."),
    name: str = typer.Option(None, "--name", help="A label for the key."),
) -> None:
    """Create a key for PROJECT (creating the project if needed) and print it."""
    from services.settings import get_settings
    from services.store.engine import make_engine, make_session_factory
    from services.store.migrate import upgrade_database
    from services.store.projects import create_api_key, ensure_project

    url = get_settings().resolved_database_url
    upgrade_database(url)
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        row = ensure_project(session, project)
        _, key = create_api_key(session, row, name=name)
        project_id = row.id
    engine.dispose()
    typer.echo(f"created key for project {project} ({project_id}); it is shown only once:", err=True)
    typer.echo(key)
