"""The one settings object: read from the environment and an optional env file, once."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lora_manager.core.errors import InvalidSettingsError

DEFAULT_DATABASE_URL = "sqlite:///./data/lora-manager.db"
ENV_FILE_VARIABLE = "LORA_MANAGER_ENV_FILE"
QUEUE_FILE_NAME = "lora-manager-queue.db"
SUPPORTED_DATABASES = "sqlite (sqlite:///path), postgresql (postgresql://user:pass@host/db)"


class Settings(BaseSettings):
    """Every setting LoRA Manager reads; each field maps to the upper-case env variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user:pass@host/db",
    )
    redis_url: str | None = Field(None, description="Redis URL for the task queue (optional)")
    api_key: SecretStr | None = Field(None, description="When set, X-API-Key must match it")
    migrate_on_startup: bool = Field(True, description="API upgrades the schema before serving")
    db_wait_timeout: float = Field(60.0, ge=0, description="Seconds to wait for the database")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "INFO"

    migration_lock_timeout: float = Field(
        300.0, ge=0, description="Seconds to wait for another process's migration to finish"
    )
    migration_pg_lock_timeout: float = Field(
        5.0, ge=0, description="PostgreSQL lock_timeout (s) for migration sessions; 0 = none"
    )
    migration_pg_statement_timeout: float = Field(
        600.0, ge=0, description="PostgreSQL statement_timeout (s) for migrations; 0 = none"
    )
    migration_lock_retries: int = Field(
        3, ge=0, description="Retries of a revision whose lock_timeout expired"
    )
    sqlite_backup_keep: int = Field(
        3, ge=0, description="Online backups kept next to a SQLite database; 0 = no backup"
    )
    lora_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Library folders (separated by ':' or ','); imports and paths stay inside",
    )
    import_ignore: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [".*", "@eaDir", "__pycache__", "*.tmp", "*.part"],
        description="Glob patterns of file and folder names the importer skips (',' separated)",
    )
    import_workers: int = Field(0, ge=0, description="Hashing threads; 0 = one per core")
    # Delivery back ends.
    delivery_http_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URL prefixes webhooks may call (',' separated); nothing else is called",
    )
    delivery_http_timeout: float = Field(30.0, gt=0, description="Webhook timeout (s)")
    delivery_cli_command: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Local command as an argument list (JSON list, or split like a shell "
        "would, never run by one)",
    )
    delivery_cli_prompt_via: str = Field(
        "argument", pattern="^(argument|stdin)$", description="How the prompt reaches it"
    )
    delivery_cli_end_of_options: str = Field(
        "--",
        description="Put before a prompt passed as an argument, so one starting with '-' is "
        "never read as an option; empty: nothing",
    )
    delivery_cli_timeout: float = Field(300.0, gt=0, description="Local command timeout (s)")
    sdnext_url: str | None = Field(None, description="SDNext / AUTOMATIC1111 base URL")
    sdnext_username: str | None = None
    sdnext_password: SecretStr | None = None
    sdnext_timeout: float = Field(600.0, gt=0, description="txt2img timeout (s)")
    sdnext_defaults: dict[str, Any] = Field(
        default_factory=dict, description="Default txt2img parameters (JSON object)"
    )
    results_dir: Path = Field(Path("./data/results"), description="Where images are saved")
    # The job queue: Huey on Redis when REDIS_URL is set, else on a SQLite file.
    queue_path: Path | None = Field(
        None,
        description="SQLite queue file; default: lora-manager-queue.db next to a SQLite "
        "database, else in $XDG_DATA_HOME/lora-manager (~/.local/share/lora-manager)",
    )
    worker_threads: int = Field(4, ge=1, le=64, description="Jobs one worker process runs at once")
    in_process_worker: bool | None = Field(
        None, description="`serve` also consumes the queue; default: on when REDIS_URL is unset"
    )
    job_max_attempts: int = Field(3, ge=1, le=20, description="Tries of a job that keeps failing")
    job_retry_delay: float = Field(
        5.0, ge=0, description="Seconds before the first retry; doubles each time"
    )
    job_retry_max_delay: float = Field(300.0, ge=0, description="Longest wait between retries (s)")
    job_lease_seconds: float = Field(
        30.0, gt=0, description="A running job's lease; renewed at a third of it"
    )
    job_sweep_interval: float = Field(
        10.0, gt=0, description="How often workers look for expired leases and lost jobs (s)"
    )
    job_requeue_after: float = Field(
        60.0, gt=0, description="A due pending job is queued again after this long (s)"
    )
    worker_shutdown_timeout: float = Field(
        30.0, ge=0, description="On SIGTERM, how long running jobs may take to finish (s)"
    )
    # Recommendations.
    recommendation_embedder: str = Field(
        "light",
        pattern="^(light|semantic)$",
        description="light (hashed n-grams, NumPy) or semantic (all-MiniLM-L6-v2, the [ml] extra)",
    )
    recommendation_index_check: float = Field(
        2.0,
        ge=0,
        description="Seconds between background checks of the table for changed vectors "
        "(0: every request checks)",
    )
    max_request_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest request body (bytes) the API reads; larger ones get 413",
    )
    schema_check_interval: float = Field(
        2.0,
        ge=0,
        description="Seconds the API trusts its last 'schema at head' answer before "
        "re-checking in the background (0: every request checks)",
    )

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        # Hosted PostgreSQL often hands out postgres:// URLs; psycopg 3 is the driver we ship.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                value = "postgresql+psycopg://" + value[len(prefix) :]
                break
        # Only the scheme is named: the rest of the URL may carry a password.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError(
                f"not a database URL; supported databases: {SUPPORTED_DATABASES}"
            ) from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(
                f"unsupported database {backend!r}; supported databases: {SUPPORTED_DATABASES}"
            )
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "set but empty; give it a key, or unset it to run without authentication"
            )
        return value

    @field_validator("lora_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            parts = value.replace(",", os.pathsep).split(os.pathsep)
            return [Path(part).expanduser() for part in parts if part.strip()]
        return value

    @field_validator("delivery_cli_command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        if isinstance(value, str):
            import json
            import shlex

            text = value.strip()
            return json.loads(text) if text.startswith("[") else shlex.split(text)
        return value

    @field_validator("import_ignore", "delivery_http_allowlist", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def resolved_roots(self) -> list[Path]:
        """Library roots as absolute real paths (what confinement checks compare against)."""
        return [Path(os.path.realpath(root)) for root in self.lora_roots]

    @property
    def queue_file(self) -> Path:
        """The SQLite queue's file (used when REDIS_URL is unset), as an absolute path: next to
        a SQLite database, else in the per-user data folder, never under the working folder,
        so every command and worker of one database shares one queue."""
        if self.queue_path is not None:
            return Path(os.path.abspath(self.queue_path.expanduser()))
        database = self.sqlite_path
        folder = database.parent if database is not None else user_data_dir()
        return Path(os.path.abspath(folder)) / QUEUE_FILE_NAME

    @property
    def runs_worker_in_process(self) -> bool:
        return self.in_process_worker if self.in_process_worker is not None else not self.redis_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a file-backed SQLite URL, else None."""
        if not self.is_sqlite:
            return None
        from sqlalchemy.engine import make_url

        database = make_url(self.database_url).database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database)


def user_data_dir() -> Path:
    """This user's data folder for LoRA Manager: $XDG_DATA_HOME/lora-manager, else
    ~/.local/share/lora-manager (the XDG base directory rules)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "lora-manager"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and the env file named by LORA_MANAGER_ENV_FILE.

    Raises InvalidSettingsError, one line naming each bad setting (never its value)."""
    env_file = os.environ.get(ENV_FILE_VARIABLE, ".env")
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise InvalidSettingsError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
