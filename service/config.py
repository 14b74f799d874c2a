"""Settings: the one place configuration is read, validated once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "load_settings"]


class SettingsError(Exception):
    """A setting has an invalid value; the message is one line naming the variable."""


class Settings(BaseSettings):
    """Every `EXPORTER_*` variable the service reads (see DESIGN.md)."""

    model_config = SettingsConfigDict(env_prefix="EXPORTER_", env_file=".env", extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/exporter"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535)
    metrics_port: int = Field(9100, ge=0, le=65535)
    public_url: str = ""
    storage_dir: Path = Path("./var/exports")
    storage_url: str = ""
    storage_endpoint_url: str = ""
    jwt_secret: str = ""
    download_url_ttl_seconds: int = Field(3600, gt=0)
    worker_concurrency: int = Field(4, ge=1, le=256)
    step_timeout_seconds: float = Field(300, gt=0)
    step_max_attempts: int = Field(3, ge=1, le=20)
    retry_backoff_seconds: float = Field(0.5, ge=0)
    delivery_limit: int = Field(3, ge=1, le=100)
    retention_days: int = Field(30, ge=1)
    package_ttl_days: int = Field(7, ge=1)
    topology_prefix: str = Field("exports", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
    log_level: str = Field("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")
    heartbeat_seconds: float = Field(2.0, gt=0)
    lease_seconds: float = Field(15.0, gt=0)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    relay_poll_seconds: float = Field(1.0, gt=0)
    status_rate_limit: float = Field(10.0, gt=0)
    cleanup_interval_seconds: float = Field(0, ge=0)
    monitor_interval_seconds: float = Field(15.0, gt=0)
    # Comma-separated modules with extra strategies (plugins; tests register failing ones).
    strategy_modules: str = ""

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an amqp:// URL")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value and not value.startswith(("file://", "s3://")):
            raise ValueError("must be file://PATH or s3://BUCKET/PREFIX")
        return value

    @property
    def packages_url(self) -> str:
        """Where finished packages live: STORAGE_URL, or a directory under STORAGE_DIR."""
        return self.storage_url or f"file://{(self.storage_dir / 'packages').resolve()}"

    @property
    def extra_strategy_modules(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.strategy_modules.split(",") if m.strip())

    @property
    def work_dir(self) -> Path:
        return self.storage_dir / "work"

    def require_secret(self) -> str:
        """The JWT/HMAC secret, refusing to run the API without one."""
        if len(self.jwt_secret) < 32:
            raise SettingsError(
                "EXPORTER_JWT_SECRET: must be set to at least 32 characters "
                "(`make run` writes a random one to .env)"
            )
        return self.jwt_secret


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning a validation error into one line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "EXPORTER_" + str(first["loc"][0]).upper() if first["loc"] else "EXPORTER_*"
        raise SettingsError(f"{name}: {first['msg']}") from None
