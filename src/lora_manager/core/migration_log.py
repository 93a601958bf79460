"""The step log: one row per applied (or failed) migration step, with the file's checksum.

The table belongs to the migration machinery, like `alembic_version`, so it lives outside
the models' metadata and is created on demand by whoever migrates (the runner or `alembic`).
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)

from lora_manager.core.version import package_version

LOG_TABLE_NAME = "lora_migration_log"
_ERROR_TEXT_LIMIT = 4000

log_metadata = MetaData()
migration_log = Table(
    LOG_TABLE_NAME,
    log_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("revision", String(64), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("error", Text),
    Column("host", String(255), nullable=False),
    Column("package_version", String(64), nullable=False),
    Column("checksum", String(64)),
    Index("ix_lora_migration_log_revision", "revision"),
)


def file_checksum(path: str | Path) -> str:
    """SHA-256 of a revision file's bytes, line endings normalised so a checkout on Windows
    does not look edited."""
    data = Path(path).read_bytes().replace(b"\r\n", b"\n")
    return hashlib.sha256(data).hexdigest()


# Search structures built by raw SQL in e1b7c9d4a6f2: not expressible as model objects.
UNMANAGED_TABLE_PREFIX = "adapter_fts"
EXPRESSION_INDEX_WARNING = "Skipped unsupported reflection of expression-based index"
UNMANAGED_INDEXES = frozenset({"ix_adapter_search_tsv", "ix_adapter_lower_name"})


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Keep the step log and the raw-SQL search structures out of autogenerate and
    `alembic check`: they are not model tables."""
    if type_ == "table" and name is not None:
        return name != LOG_TABLE_NAME and not name.startswith(UNMANAGED_TABLE_PREFIX)
    if type_ == "index":
        return name not in UNMANAGED_INDEXES
    return True


def ensure_log_table(connection: Connection) -> None:
    migration_log.create(connection, checkfirst=True)


@dataclass(frozen=True)
class StepRecord:
    revision: str
    direction: str
    started_at: datetime
    duration_ms: float
    success: bool
    error: str | None = None
    checksum: str | None = None


def record_step(connection: Connection, step: StepRecord) -> None:
    """Append one step to the log on `connection` (the caller owns the transaction)."""
    error = step.error[:_ERROR_TEXT_LIMIT] if step.error else None
    connection.execute(
        migration_log.insert().values(
            revision=step.revision,
            direction=step.direction,
            started_at=step.started_at,
            duration_ms=round(step.duration_ms, 3),
            success=step.success,
            error=error,
            host=socket.gethostname(),
            package_version=package_version(),
            checksum=step.checksum,
        )
    )


def applied_checksums(connection: Connection) -> dict[str, str]:
    """The checksum each revision had when it was last successfully applied."""
    from sqlalchemy import inspect

    if not inspect(connection).has_table(LOG_TABLE_NAME):
        return {}
    rows = connection.execute(
        select(migration_log.c.revision, migration_log.c.checksum)
        .where(migration_log.c.success.is_(True), migration_log.c.direction == "upgrade")
        .order_by(migration_log.c.id)
    )
    return {revision: checksum for revision, checksum in rows if checksum}


def read_log(connection: Connection, limit: int = 50) -> list[dict[str, object]]:
    """The newest `limit` steps, newest first."""
    from sqlalchemy import inspect

    if not inspect(connection).has_table(LOG_TABLE_NAME):
        return []
    rows = connection.execute(
        select(migration_log).order_by(migration_log.c.id.desc()).limit(limit)
    ).mappings()
    return [dict(row) for row in rows]
