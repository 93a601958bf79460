"""Shared fixtures: real PostgreSQL and Redis servers per session, fresh databases per test,
and databases at head copied from templates migrated once per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, running_postgres
from tests.support.processes import BIN_DIR
from tests.support.redis import RedisServer, flush, running_redis
from tests.support.templates import MigratedTemplates, settings_free_environment


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database."""
    return pg_server.create_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis server, emptied (FLUSHALL) for this test."""
    flush(redis_server.url)
    return redis_server.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lora.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lora.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running `lora-manager` and the shell scripts as subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "API_KEY"))}
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["LORA_MANAGER_ENV_FILE"] = str(tmp_path / "no-such.env")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def clean_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No env file and no setting from the environment, for the module (a module that wants
    it for every test says `pytestmark = pytest.mark.usefixtures("clean_environment")`)."""
    with settings_free_environment(tmp_path_factory.mktemp("env")):
        yield


@pytest.fixture(scope="module")
def templates(
    tmp_path_factory: pytest.TempPathFactory, clean_environment: None
) -> MigratedTemplates:
    """The module's databases at head, one per kind, copied into each test's database."""
    return MigratedTemplates(tmp_path_factory.mktemp("templates"))


@pytest.fixture
def migrated_db_url(
    db_url: str, templates: MigratedTemplates, request: pytest.FixtureRequest
) -> str:
    """`db_url`, at head: SQLite and PostgreSQL."""
    templates.fill(db_url, request)
    return db_url


@pytest.fixture
def migrated_sqlite_url(sqlite_url: str, templates: MigratedTemplates) -> str:
    """`sqlite_url`, at head."""
    templates.fill(sqlite_url)
    return sqlite_url
