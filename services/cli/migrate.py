"""`alignd migrate`: bring the database at ALIGND_DATABASE_URL to the newest schema."""

from __future__ import annotations

import typer


def migrate_command(
    database_url: str = typer.Option(None, "--database-url", help="SQLAlchemy URL; default ALIGND_DATABASE_URL."),
    revision: str = typer.Option("head", help="Target revision."),
) -> None:
    """Apply Alembic migrations (packaged with alignd; no alembic.ini needed)."""
    from services.settings import get_settings
    from services.store.migrate import current_revision, upgrade_database

    url = database_url or get_settings().resolved_database_url
    upgrade_database(url, revision)
    typer.echo(f"database at revision {current_revision(url)}")
