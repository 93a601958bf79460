"""Cross-process locks: a PostgreSQL session advisory lock, or a file beside a SQLite database."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as FileLockTimeout
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from lora_manager.core.errors import LockTimeoutError

# "LORA" as a 32-bit number: pg_locks shows it as objid with classid 0.
ADVISORY_LOCK_KEY = 0x4C4F5241
_LOCK_POLL_INTERVAL = 0.2

Echo = Callable[[str], None]


class PostgresAdvisoryLock:
    """A session-level advisory lock on its own autocommit connection, polled to a deadline.

    Polling `pg_try_advisory_lock` (rather than blocking in `pg_advisory_lock`) lets us give
    up with a clear message, and keeps the lock outside the migrations' transactions.
    """

    def __init__(
        self,
        engine: Engine,
        timeout: float,
        echo: Echo,
        *,
        key: int = ADVISORY_LOCK_KEY,
        what: str = "the migration lock",
        setting: str = "MIGRATION_LOCK_TIMEOUT",
    ) -> None:
        self.engine = engine
        self.timeout = timeout
        self.echo = echo
        self.key = key
        self.what = what
        self.setting = setting
        self.connection: Connection | None = None
        self.waited = 0.0

    def __enter__(self) -> PostgresAdvisoryLock:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        started = time.monotonic()
        deadline = started + self.timeout
        announced = False
        try:
            while True:
                got = connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
                ).scalar()
                if got:
                    self.connection = connection
                    self.waited = time.monotonic() - started
                    return self
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"gave up waiting {self.timeout:g}s for {self.what} "
                        f"({self.setting}): held by {self.holder(connection)}"
                    )
                if not announced:
                    self.echo(f"waiting for {self.what}, held by {self.holder(connection)}")
                    announced = True
                time.sleep(_LOCK_POLL_INTERVAL)
        except BaseException:
            connection.close()
            raise

    def holder(self, connection: Connection) -> str:
        row = connection.execute(
            text(
                "SELECT a.pid, a.application_name, a.client_addr, a.backend_start "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 "
                "AND l.objid = :key AND l.objsubid = 1"
            ),
            {"key": self.key},
        ).first()
        if row is None:
            return "a process that has just released it"
        who = row.application_name or "unknown application"
        where = f" from {row.client_addr}" if row.client_addr else ""
        since = row.backend_start.strftime("%Y-%m-%d %H:%M:%S") if row.backend_start else "?"
        return f"backend pid {row.pid} ({who}{where}, connected since {since})"

    def __exit__(self, *exc: object) -> None:
        if self.connection is None:
            return
        with contextlib.suppress(SQLAlchemyError):
            self.connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        self.connection.close()
        self.connection = None


class SqliteFileLock:
    """A file lock beside the database file; one holder per file and purpose."""

    def __init__(
        self,
        database: Path,
        timeout: float,
        echo: Echo,
        *,
        suffix: str = ".migrate.lock",
        what: str = "the migration lock",
        setting: str = "MIGRATION_LOCK_TIMEOUT",
    ) -> None:
        self.path = database.with_name(database.name + suffix)
        self.lock = FileLock(str(self.path))
        self.timeout = timeout
        self.echo = echo
        self.what = what
        self.setting = setting
        self.waited = 0.0

    def __enter__(self) -> SqliteFileLock:
        started = time.monotonic()
        try:
            self.lock.acquire(timeout=0)
        except FileLockTimeout:
            self.echo(f"waiting for {self.what} {self.path} (another process holds it)")
            try:
                self.lock.acquire(timeout=self.timeout)
            except FileLockTimeout:
                raise LockTimeoutError(
                    f"gave up waiting {self.timeout:g}s for {self.what} {self.path} "
                    f"({self.setting}): another process is holding it"
                ) from None
        self.waited = time.monotonic() - started
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
