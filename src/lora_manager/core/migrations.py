"""The migration runner: wait for the database, take the migration lock, upgrade, audit.

Every way of migrating goes through here (`lora-manager db …`, the API's start-up, the
shell scripts), so the rules hold everywhere:

* at head → return at once, without taking any lock;
* otherwise one migrator at a time (PostgreSQL session advisory lock polled with
  `pg_try_advisory_lock` on its own connection; a file lock beside a SQLite database), then
  re-read the revision, since another process may have done the work meanwhile;
* PostgreSQL sessions run with `lock_timeout`/`statement_timeout`, one transaction per
  revision, and a revision whose lock wait timed out is retried a bounded number of times;
* a non-empty SQLite database is backed up online before it changes;
* every step lands in the step log with its file's checksum, so `check` catches edits.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, TextIO

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SAWarning, SQLAlchemyError

from lora_manager.core.config import Settings
from lora_manager.core.db import database_target, make_engine, short_error, wait_for_database
from lora_manager.core.errors import (
    MigrationError,
    SchemaNotAtHeadError,
)
from lora_manager.core.locks import PostgresAdvisoryLock, SqliteFileLock
from lora_manager.core.migration_log import (
    EXPRESSION_INDEX_WARNING,
    StepRecord,
    applied_checksums,
    ensure_log_table,
    file_checksum,
    include_object,
    read_log,
    record_step,
)
from lora_manager.core.models import Base, utcnow

log = logging.getLogger(__name__)

_LOCK_NOT_AVAILABLE = "55P03"
RELATIVE_REVISION = re.compile(r"[+-]\d+")
_PACKAGED_SCRIPTS = Path(__file__).resolve().parents[1] / "_alembic"
_SOURCE_SCRIPTS = Path(__file__).resolve().parents[3] / "infrastructure" / "alembic"

Echo = Callable[[str], None]

# Offline rendering needs only a dialect, never a real server.
OFFLINE_URLS = {"postgresql": "postgresql+psycopg://", "sqlite": "sqlite://"}


def script_location() -> Path:
    """The Alembic scripts: shipped in the wheel, or the checkout's infrastructure/alembic."""
    for candidate in (_PACKAGED_SCRIPTS, _SOURCE_SCRIPTS):
        if (candidate / "env.py").is_file():
            return candidate
    raise MigrationError(
        f"migration scripts not found (looked in {_PACKAGED_SCRIPTS} and {_SOURCE_SCRIPTS})"
    )


def alembic_config(
    settings: Settings, *, connection: Connection | None = None, stdout: TextIO | None = None
) -> Config:
    """An in-memory Alembic config pointing at our scripts and the settings' database."""
    config = Config(stdout=stdout or io.StringIO())
    config.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    config.attributes["database_url"] = settings.database_url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _script_directory(location: str) -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", location.replace("%", "%%"))
    return ScriptDirectory.from_config(config)


def script_directory() -> ScriptDirectory:
    return _script_directory(str(script_location()))


def head_revisions() -> tuple[str, ...]:
    return tuple(sorted(script_directory().get_heads()))


def current_revisions(connection: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection)
    heads = tuple(sorted(context.get_current_heads()))
    if connection.in_transaction():
        connection.commit()  # end the read so no snapshot or SQLite read lock lingers
    return heads


@dataclass
class SchemaStatus:
    """Where a database stands against the scripts' head."""

    database: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: list[str] = field(default_factory=list)

    @property
    def at_head(self) -> bool:
        return self.current == self.heads

    def describe(self) -> str:
        if self.at_head:
            return f"at head ({', '.join(self.heads)})"
        current = ", ".join(self.current) or "base (empty)"
        return f"schema behind: at {current}, head is {', '.join(self.heads)}"


def pending_revisions(current: tuple[str, ...], target: str = "heads") -> list[str]:
    """Revision ids an upgrade from `current` to `target` would apply, oldest first."""
    scripts = script_directory()
    lower = current or None
    steps = list(scripts.iterate_revisions(target, lower if lower else "base"))
    applied = set(current)
    return [s.revision for s in reversed(steps) if s.revision not in applied]


def schema_status(connection: Connection, database: str = "") -> SchemaStatus:
    current = current_revisions(connection)
    heads = head_revisions()
    pending = [] if current == heads else pending_revisions(current)
    return SchemaStatus(database=database, current=current, heads=heads, pending=pending)


@dataclass
class MigrationOutcome:
    """What one upgrade or downgrade call did."""

    direction: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    applied: list[str]
    fast_path: bool
    waited_for_lock: float = 0.0
    backup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backup_sqlite(database: Path, label: str, keep: int) -> Path | None:
    """Online backup of a non-empty SQLite database next to it; keeps the newest `keep`."""
    if keep <= 0 or not database.is_file() or database.stat().st_size == 0:
        return None
    source = sqlite3.connect(database)
    try:
        has_tables = source.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1"
        ).fetchone()
        if not has_tables:
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = database.with_name(f"{database.name}.backup-{stamp}-{label}")
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
        finally:
            destination.close()
    finally:
        source.close()
    backups = sorted(database.parent.glob(f"{database.name}.backup-*"))
    for old in backups[:-keep]:
        old.unlink(missing_ok=True)
    return target


def _is_lock_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


class MigrationRunner:
    """Upgrades, downgrades, inspects and checks one database."""

    def __init__(self, settings: Settings, echo: Echo | None = None) -> None:
        self.settings = settings
        self.echo: Echo = echo or log.info
        self.target = database_target(settings.database_url)

    # -- connections -------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> float:
        """Wait for the database to answer, printing each failed attempt."""

        def report(attempt: int, error: str, delay: float) -> None:
            self.echo(
                f"waiting for {self.target.describe()}: attempt {attempt} failed ({error}); "
                f"retrying in {delay:.1f}s"
            )

        return wait_for_database(self.settings, timeout=timeout, on_attempt=report)

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        # Migrations run without SQLite's foreign_keys pragma: a batch table rebuild
        # would otherwise cascade-delete the children of the table it drops.
        engine = make_engine(self.settings, pooled=False, foreign_keys=False)
        try:
            yield engine
        finally:
            engine.dispose()

    def _lock(self, engine: Engine) -> PostgresAdvisoryLock | SqliteFileLock | None:
        timeout = self.settings.migration_lock_timeout
        if engine.dialect.name == "postgresql":
            return PostgresAdvisoryLock(engine, timeout, self.echo)
        path = self.settings.sqlite_path
        if path is not None:
            return SqliteFileLock(path, timeout, self.echo)
        return None

    def _prepare_session(self, connection: Connection) -> None:
        if connection.dialect.name != "postgresql":
            return
        lock_ms = int(self.settings.migration_pg_lock_timeout * 1000)
        statement_ms = int(self.settings.migration_pg_statement_timeout * 1000)
        connection.execute(text(f"SET lock_timeout = {lock_ms}"))
        connection.execute(text(f"SET statement_timeout = {statement_ms}"))
        connection.execute(text("SET application_name = 'lora-manager migrate'"))
        connection.commit()  # session settings persist; alembic then opens its own transactions

    # -- reading -----------------------------------------------------------------------

    def status(self) -> SchemaStatus:
        with self.engine() as engine, engine.connect() as connection:
            return schema_status(connection, self.target.describe())

    def step_log(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine() as engine, engine.connect() as connection:
            return read_log(connection, limit)

    def run_alembic(self, name: str, *args: object, **kwargs: object) -> str:
        """Run an alembic read command (current, history, heads) and return its output."""
        out = io.StringIO()
        with self.engine() as engine, engine.connect() as connection:
            config = alembic_config(self.settings, connection=connection, stdout=out)
            getattr(command, name)(config, *args, **kwargs)
        return out.getvalue()

    def offline_sql(self, revision_range: str, dialect: str = "postgresql") -> str:
        """The SQL an upgrade over `revision_range` would run on `dialect`, without connecting."""
        out = io.StringIO()
        config = alembic_config(self.settings, stdout=out)
        config.attributes["database_url"] = OFFLINE_URLS[dialect]
        config.output_buffer = out
        try:
            command.upgrade(config, revision_range, sql=True)
        except CommandError as exc:
            raise MigrationError(f"cannot render {revision_range!r}: {exc}") from None
        except RuntimeError as exc:
            raise MigrationError(f"cannot render {revision_range!r} for {dialect}: {exc}") from None
        return out.getvalue()

    # -- changing ----------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> MigrationOutcome:
        return self._migrate("upgrade", revision)

    def downgrade(self, revision: str) -> MigrationOutcome:
        return self._migrate("downgrade", revision)

    def _resolve(self, revision: str) -> tuple[str, ...]:
        if revision in ("head", "heads"):
            return head_revisions()
        if revision == "base":
            return ()
        try:
            scripts = script_directory().get_revisions(revision)
        except CommandError as exc:
            raise MigrationError(f"unknown revision {revision!r}: {exc}") from None
        return tuple(sorted(s.revision for s in scripts if s is not None))

    @staticmethod
    def _absolute(revision: str, current: tuple[str, ...]) -> str:
        """Turn a relative target (+1, -2) into a revision id, so a retry cannot overshoot."""
        if not RELATIVE_REVISION.fullmatch(revision):
            return revision
        chain = [s.revision for s in reversed(list(script_directory().walk_revisions()))]
        position = chain.index(current[0]) if current else -1
        target = position + int(revision)
        if not -1 <= target < len(chain):
            where = current[0] if current else "base"
            raise MigrationError(f"{revision} from {where} is outside the chain")
        return chain[target] if target >= 0 else "base"

    def _migrate(self, direction: str, revision: str) -> MigrationOutcome:
        relative = bool(RELATIVE_REVISION.fullmatch(revision))
        wanted = None if relative else self._resolve(revision)
        with self.engine() as engine:
            with engine.connect() as connection:
                before = current_revisions(connection)
            if wanted is not None and before == wanted:
                return MigrationOutcome(direction, before, before, [], fast_path=True)
            lock = self._lock(engine)
            with (
                lock if lock is not None else contextlib.nullcontext(),
                engine.connect() as connection,
            ):
                # Re-read under the lock: another process may have migrated meanwhile.
                before = current_revisions(connection)
                if relative:
                    revision = self._absolute(revision, before)
                    wanted = self._resolve(revision)
                if before == wanted:
                    return MigrationOutcome(direction, before, before, [], fast_path=False)
                backup = self._backup(direction, before)
                self._prepare_session(connection)
                self._run_with_retries(connection, direction, revision)
                after = current_revisions(connection)
            applied = self._steps_between(before, after, direction)
            return MigrationOutcome(
                direction,
                before,
                after,
                applied,
                fast_path=False,
                waited_for_lock=getattr(lock, "waited", 0.0),
                backup=str(backup) if backup else None,
            )

    def _backup(self, direction: str, before: tuple[str, ...]) -> Path | None:
        path = self.settings.sqlite_path
        if path is None:
            return None
        label = f"{direction}-from-{'-'.join(before) or 'base'}"
        backup = backup_sqlite(path, label, self.settings.sqlite_backup_keep)
        if backup is not None:
            self.echo(f"backed up {path} to {backup}")
        return backup

    def _run_with_retries(self, connection: Connection, direction: str, revision: str) -> None:
        config = alembic_config(self.settings, connection=connection)
        attempts = self.settings.migration_lock_retries + 1
        for attempt in range(1, attempts + 1):
            started_at, started = utcnow(), time.monotonic()
            try:
                getattr(command, direction)(config, revision)
                return
            except CommandError as exc:
                raise MigrationError(f"{direction} to {revision!r} refused: {exc}") from None
            except SQLAlchemyError as exc:
                connection.rollback()
                failed = self._failing_step(connection, direction, revision)
                error = short_error(exc)
                self._record_failure(connection, failed, direction, started_at, started, error)
                if _is_lock_timeout(exc) and attempt < attempts:
                    delay = min(2.0**attempt, 10.0)
                    self.echo(
                        f"{direction} of {failed} timed out waiting for a table lock "
                        f"(lock_timeout); retry {attempt}/{attempts - 1} in {delay:.0f}s"
                    )
                    time.sleep(delay)
                    continue
                raise MigrationError(f"{direction} of revision {failed} failed: {error}") from exc

    def _failing_step(self, connection: Connection, direction: str, revision: str) -> str:
        current = current_revisions(connection)
        with contextlib.suppress(Exception):
            if direction == "upgrade":
                pending = pending_revisions(current, revision)
                if pending:
                    return pending[0]
            elif current:
                return current[0]
        return revision

    @staticmethod
    def _record_failure(
        connection: Connection,
        revision: str,
        direction: str,
        started_at: datetime,
        started: float,
        error: str,
    ) -> None:
        with contextlib.suppress(SQLAlchemyError), connection.begin():
            ensure_log_table(connection)
            record_step(
                connection,
                StepRecord(
                    revision=revision,
                    direction=direction,
                    started_at=started_at,
                    duration_ms=(time.monotonic() - started) * 1000,
                    success=False,
                    error=error,
                ),
            )

    @staticmethod
    def _steps_between(
        before: tuple[str, ...], after: tuple[str, ...], direction: str
    ) -> list[str]:
        if before == after:
            return []
        if direction == "upgrade":
            return pending_revisions(before, after[0] if after else "base")
        undone = pending_revisions(after, before[0] if before else "base")
        return list(reversed(undone))

    # -- verifying ---------------------------------------------------------------------

    def check(self) -> list[str]:
        """Problems that should stop a deploy: several heads, edited revisions, drift."""
        problems: list[str] = []
        scripts = script_directory()
        heads = scripts.get_heads()
        if len(heads) != 1:
            problems.append(
                f"the chain has {len(heads)} heads ({', '.join(sorted(heads))}): merge them"
            )
        with self.engine() as engine, engine.connect() as connection:
            current = current_revisions(connection)
            recorded = applied_checksums(connection)
            for script in self._applied_scripts(current):
                expected = recorded.get(script.revision)
                if expected and expected != file_checksum(script.path):
                    problems.append(
                        f"revision {script.revision} was edited after it was applied: "
                        f"{Path(script.path).name} no longer matches the checksum recorded "
                        "when it ran (write a new revision instead)"
                    )
            if current != tuple(sorted(heads)):
                status = schema_status(connection, self.target.describe())
                problems.append(f"{status.describe()}: run `lora-manager db upgrade`")
            else:
                problems.extend(
                    f"models and migrations differ: {diff}" for diff in self.drift(connection)
                )
        return problems

    @staticmethod
    def drift(connection: Connection) -> list[object]:
        """What `alembic check` would report: differences between the models and the DB."""
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        with warnings.catch_warnings():
            # SQLite cannot reflect expression indexes; ours are left out of the comparison.
            warnings.filterwarnings("ignore", EXPRESSION_INDEX_WARNING, SAWarning)
            return list(compare_metadata(context, Base.metadata))

    @staticmethod
    def _applied_scripts(current: tuple[str, ...]) -> list[Script]:
        if not current:
            return []
        return [s for s in script_directory().iterate_revisions(current, "base") if s is not None]

    def require_head(self) -> SchemaStatus:
        status = self.status()
        if not status.at_head:
            raise SchemaNotAtHeadError(status.describe())
        return status
