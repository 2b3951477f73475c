"""`alignd keys create --project NAME` (the new key alone on the last line), `keys list`, `keys revoke KEY`."""

from __future__ import annotations

import typer

KEY_COLUMNS = ("ID", "PREFIX", "PROJECT", "CREATED", "REVOKED", "NAME")  # `keys list`'s header row

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


@keys_app.command("revoke")
def revoke_key_command(
    key: str = typer.Argument(..., help="Key id (key-…), the key itself, or its shown prefix (ak-xxxxxxx)."),
) -> None:
    """Revoke a key: running API servers refuse it from their next request on."""
    from services.settings import get_settings
    from services.store.engine import make_engine, make_session_factory
    from services.store.migrate import upgrade_database
    from services.store.projects import ApiKeyNotFound, find_api_key, revoke_api_key

    key = key.strip().removesuffix("…").removesuffix("...")  # the prefix as `keys list` shows it, copied whole
    url = get_settings().resolved_database_url
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            row = revoke_api_key(session, find_api_key(session, key))
            key_id, prefix, project_id = row.id, row.prefix, row.project_id
    except ApiKeyNotFound as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"revoked {key_id} ({prefix}…) of project {project_id}")


@keys_app.command("list")
def list_keys_command(
    project: str = typer.Option(None, "--project", help="Only this project's keys (name or id)."),
) -> None:
    """List keys under a header row: id, shown prefix, project, created and revoked times, name."""
    import datetime

    from services.settings import get_settings
    from services.store.engine import make_engine, make_session_factory
    from services.store.migrate import upgrade_database
    from services.store.projects import get_project, list_api_keys

    def when(seconds: float | None) -> str:
        return "-" if seconds is None else datetime.datetime.fromtimestamp(seconds).isoformat(timespec="seconds")

    url = get_settings().resolved_database_url
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            project_id = None
            if project is not None:
                row = get_project(session, project)
                if row is None:
                    typer.echo(f"error: no project '{project}'", err=True)
                    raise typer.Exit(1)
                project_id = row.id
            rows = [[key.id, f"{key.prefix}…", key.project_id, when(key.created_at), when(key.revoked_at),
                     key.name or "-"] for key in list_api_keys(session, project_id)]
    finally:
        engine.dispose()
    if not rows:
        typer.echo("no API keys" + (f" in project '{project}'" if project else ""), err=True)
        return
    # Aligned columns under a header; the name last, as it may hold spaces (the other columns never do).
    table = [list(KEY_COLUMNS), *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(KEY_COLUMNS) - 1)]
    for row in table:
        typer.echo("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]))
