"""Engines, sessions and waiting for the database to answer."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from lora_manager.core.config import Settings
from lora_manager.core.errors import DatabaseUnreachableError

log = logging.getLogger(__name__)

_FIRST_RETRY_DELAY = 0.2
_MAX_RETRY_DELAY = 2.0
_MAX_CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class DatabaseTarget:
    """Where a URL points, without its password: safe to print."""

    dialect: str
    host: str | None
    port: int | None
    database: str | None

    def where(self) -> str:
        """host=… port=… database=…, as the operator would look them up."""
        if self.dialect == "sqlite":
            return f"database={self.database or ':memory:'}"
        return f"host={self.host or 'localhost'} port={self.port or 5432} database={self.database}"

    def describe(self) -> str:
        if self.dialect == "sqlite":
            return f"SQLite database {self.database or ':memory:'}"
        port = self.port or 5432
        return f"{self.dialect} database {self.database!r} at {self.host or 'localhost'}:{port}"


def database_target(url: str | URL) -> DatabaseTarget:
    parsed = make_url(url)
    return DatabaseTarget(parsed.get_backend_name(), parsed.host, parsed.port, parsed.database)


def ensure_sqlite_directory(settings: Settings) -> None:
    """SQLite creates the file but not its folder (the default is ./data/)."""
    path = settings.sqlite_path
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


class _SqliteDbapiConnection(Protocol):
    """What the connect hook uses of a SQLite driver's connection (pysqlite's, by default)."""

    isolation_level: str | None

    def cursor(self) -> DBAPICursor: ...


def _sqlite_pragmas(
    foreign_keys: bool, own_begin: bool
) -> Callable[[_SqliteDbapiConnection, ConnectionPoolEntry], None]:
    def on_connect(dbapi_connection: _SqliteDbapiConnection, _record: ConnectionPoolEntry) -> None:
        if own_begin:
            # pysqlite begins only before DML, so a SAVEPOINT would open a transaction and its
            # RELEASE commit it: SQLAlchemy emits BEGIN IMMEDIATE itself instead.
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return on_connect


def _sqlite_begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(
    settings: Settings,
    *,
    pooled: bool = True,
    connect_timeout: float | None = None,
    foreign_keys: bool = True,
    sqlite_writer: bool = False,
    pre_ping: bool = True,
) -> Engine:
    """The application's engine; SQLite gets foreign keys, WAL and a busy timeout.

    `sqlite_writer` makes every SQLite transaction BEGIN IMMEDIATE (a writer that must not
    lose its snapshot to another writer, and whose savepoints must nest): for the importer.
    Without `pre_ping` a dropped PostgreSQL connection fails its statement instead of being
    tested before each checkout: for callers that retry (the job worker).
    """
    ensure_sqlite_directory(settings)
    kwargs: dict[str, object] = {}
    connect_args: dict[str, object] = {}
    if settings.is_sqlite:
        connect_args["timeout"] = 5
    elif connect_timeout is not None:
        connect_args["connect_timeout"] = max(1, int(connect_timeout))
    if not pooled:
        kwargs["poolclass"] = NullPool
    elif not settings.is_sqlite and pre_ping:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(settings.database_url, connect_args=connect_args, **kwargs)
    if settings.is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas(foreign_keys, sqlite_writer))
        if sqlite_writer:
            event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def short_error(exc: BaseException) -> str:
    """The driver's own message, first line only, without SQLAlchemy's boilerplate."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    message = str(exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


# The server answered and said no: the database or role is missing or the credentials are
# wrong. Waiting cannot change that, unlike a refused port or "the database system is starting".
_REFUSED = re.compile(
    r'database "[^"]*" does not exist|role "[^"]*" does not exist|authentication failed'
    r"|no pg_hba\.conf entry|no password supplied|permission denied for database",
    re.IGNORECASE,
)


def _fatal_part(error: str) -> str:
    """libpq's 'connection to server at … failed: FATAL:  …' reduced to the server's verdict."""
    _, found, reason = error.rpartition("FATAL:")
    return f"FATAL: {reason.strip()}" if found else error


def wait_for_database(
    settings: Settings,
    *,
    timeout: float | None = None,
    on_attempt: Callable[[int, str, float], None] | None = None,
) -> float:
    """Connect and `SELECT 1` until it works, backing off up to `timeout` seconds.

    Calls `on_attempt(attempt, error, next_delay)` after each failure. Returns the seconds
    waited; raises DatabaseUnreachableError naming host, port, database and the last error,
    at once when the server refuses (missing database or role, failed authentication).
    """
    if timeout is None:
        timeout = settings.db_wait_timeout
        limit = f"DB_WAIT_TIMEOUT={timeout:g}"
    else:
        # A caller's own limit (`db status` tries once), not the setting: name it as such.
        limit = (
            "this command tries once, without DB_WAIT_TIMEOUT"
            if timeout <= 0
            else f"timeout={timeout:g}s"
        )
    started = time.monotonic()
    deadline = started + timeout
    delay = _FIRST_RETRY_DELAY
    attempt = 0
    ensure_sqlite_directory(settings)
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        engine = make_engine(
            settings,
            pooled=False,
            connect_timeout=min(_MAX_CONNECT_TIMEOUT, max(1.0, remaining)),
        )
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return time.monotonic() - started
        except SQLAlchemyError as exc:
            error = short_error(exc)
        finally:
            engine.dispose()
        if _REFUSED.search(error):
            raise DatabaseUnreachableError(
                f"database refused the connection (retrying cannot help): "
                f"{database_target(settings.database_url).where()} — {_fatal_part(error)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DatabaseUnreachableError(
                f"database unreachable: gave up after {attempt} "
                f"attempt{'s' if attempt != 1 else ''} in "
                f"{time.monotonic() - started:.1f}s ({limit}): "
                f"{database_target(settings.database_url).where()} — last error: {error}"
            )
        sleep_for = min(delay, remaining)
        if on_attempt is not None:
            on_attempt(attempt, error, sleep_for)
        time.sleep(sleep_for)
        delay = min(delay * 2, _MAX_RETRY_DELAY)
