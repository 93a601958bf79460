"""Alembic environment for LoRA Manager.

Used both by the `alembic` command (`cd infrastructure && alembic upgrade head`) and by the
project's migration runner, which hands over its own connection in
`config.attributes["connection"]` after taking the migration lock and setting timeouts.
Tools that hand over an Engine there instead (pytest-alembic) work too.
Logging is never reconfigured here when the host process already set it up.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, pool
from sqlalchemy.exc import SAWarning

from lora_manager.core.config import load_settings
from lora_manager.core.migration_log import (
    EXPRESSION_INDEX_WARNING,
    StepRecord,
    ensure_log_table,
    file_checksum,
    include_object,
    record_step,
)
from lora_manager.core.models import Base, utcnow

config = context.config
target_metadata = Base.metadata

# SQLite cannot reflect expression indexes; ours are left out of `alembic check` anyway.
warnings.filterwarnings("ignore", EXPRESSION_INDEX_WARNING, SAWarning)

if not logging.getLogger().handlers:
    # Plain `alembic` CLI run: show progress without clobbering an application's logging.
    logging.basicConfig(level=logging.INFO, format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)


def database_url() -> str:
    return config.attributes.get("database_url") or load_settings().database_url


class StepRecorder:
    """Writes each applied step to the step log inside that step's own transaction."""

    def __init__(self) -> None:
        self.table_ready = False
        self.mark = time.monotonic()
        self.started_at = utcnow()

    def start(self) -> None:
        self.mark = time.monotonic()
        self.started_at = utcnow()

    def __call__(self, *, ctx: Any, step: Any, heads: set[str], run_args: Any) -> None:
        now = time.monotonic()
        script = step.up_revision
        if not self.table_ready:
            # Created on the first applied step, so read-only commands never create it.
            ensure_log_table(ctx.connection)
            self.table_ready = True
        record_step(
            ctx.connection,
            StepRecord(
                revision=step.up_revision_id,
                direction="upgrade" if step.is_upgrade else "downgrade",
                started_at=self.started_at,
                duration_ms=(now - self.mark) * 1000,
                success=True,
                checksum=file_checksum(script.path) if script is not None else None,
            ),
        )
        self.mark = now
        self.started_at = utcnow()


def run_migrations_offline() -> None:
    """`--sql` mode: print the DDL instead of running it."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
        transaction_per_migration=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_with_connection(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    recorder = StepRecorder()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,
        # SQLite's DDL is transactional under pysqlite; a failed step rolls back whole.
        transactional_ddl=True,
        transaction_per_migration=True,
        compare_type=True,
        include_object=include_object,
        on_version_apply=[] if config.attributes.get("skip_step_log") else [recorder],
    )
    recorder.start()
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # `config.attributes["connection"]` may hold a Connection (our runner, the Alembic
    # cookbook) or an Engine (pytest-alembic, other tools); an Engine stays the caller's.
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        run_with_connection(given)
        return
    if isinstance(given, Engine):
        with given.connect() as connection:
            run_with_connection(connection)
        return
    if given is not None:
        raise CommandError(
            'config.attributes["connection"] must be a SQLAlchemy Connection or Engine, '
            f"not {type(given).__name__}"
        )
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_with_connection(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
