"""Service settings, read once from ``ALIGND_*`` environment variables."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALIGND_", extra="ignore")

    home: Path = Field(Path("~/.alignd"), description="Where embedded mode keeps its database and files.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under home.")
    storage_uri: str | None = Field(None, description="Folder or s3:// / gs:// URI; default: under home.")
    ray_address: str | None = Field(None, description="Ray cluster address; default: start a local Ray.")
    admin_key: str | None = Field(None, description="Bootstrap key acting on the 'default' project.")
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest accepted file upload.")
    lease_seconds: float = Field(30.0, description="How long a claimed job stays leased without heartbeat.")
    gpu_type: str = Field("H100-80GB", description="GPU that jobs asking for GPUs are planned against.")
    reward_functions: str = Field("", description="Comma-separated 'module:callable' reward functions that API "
                                  "jobs may name besides the built-in ones (workers import and run them).")
    log_level: str = "INFO"

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'alignd.db'}"

    @property
    def resolved_storage_uri(self) -> str:
        return self.storage_uri or str(self.resolved_home / "storage")


@lru_cache
def get_settings() -> Settings:
    return Settings()


_logging_configured = False


def configure_logging(level: str | None = None) -> None:
    """Configure the root logger once per process."""
    global _logging_configured
    if _logging_configured:
        return
    logging.basicConfig(
        level=(level or get_settings().log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Migrations log every plugin they load at INFO; only their problems are worth a user's screen.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _logging_configured = True
