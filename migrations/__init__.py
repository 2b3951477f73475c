"""Alembic migrations of the control-plane schema (shipped inside the package)."""
