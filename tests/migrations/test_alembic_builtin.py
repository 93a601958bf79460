"""pytest-alembic's built-in checks of the revision chain, on SQLite and PostgreSQL, and the
Alembic environment's handling of what callers put in `config.attributes["connection"]`.

pytest-alembic's plugin binds its own collector to tests/conftest.py in every session, and
on pytest 9 that collector fails (it sets a node id attribute pytest no longer has), which
stops the whole suite from being collected. So the plugin is disabled in pyproject's addopts
(`-p no:pytest_alembic`) and its four default tests are imported here by name, with the
`alembic_config` / `alembic_engine` / `alembic_runner` fixtures they need defined below.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from pytest_alembic.config import Config as PytestAlembicConfig
from pytest_alembic.runner import MigrationContext, runner
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Connection, Engine, create_engine, inspect, pool

from lora_manager.core.config import load_settings
from lora_manager.core.migrations import alembic_config as make_alembic_config
from lora_manager.core.migrations import head_revisions
from lora_manager.core.models import Base

# Collected by pytest from this module's namespace.
__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_engine(db_url: str) -> Iterator[Engine]:
    """A fresh empty database of each kind (`db_url` runs SQLite, then PostgreSQL)."""
    engine = create_engine(db_url, poolclass=pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def alembic_config(db_url: str) -> Config:
    """The same in-memory Alembic config the migration runner uses: our script location."""
    return make_alembic_config(load_settings(database_url=db_url))


@pytest.fixture
def alembic_runner(alembic_config: Config, alembic_engine: Engine) -> Iterator[MigrationContext]:
    # pytest-alembic puts the Engine itself in config.attributes["connection"].
    with runner(
        config=PytestAlembicConfig.from_raw_config(alembic_config), engine=alembic_engine
    ) as context:
        yield context


# -- env.py: an Engine or a Connection in config.attributes["connection"] -------------------


def version_in(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert set(Base.metadata.tables) <= tables
    return {row[0] for row in rows}


def upgrade_with(config: Config, connectable: Any) -> None:
    # A URL that does not exist: env.py must use what it was handed, never open its own.
    config.attributes["database_url"] = "sqlite:////nonexistent-dir/never-opened.db"
    config.attributes["connection"] = connectable
    command.upgrade(config, "head")


def test_env_accepts_an_engine(alembic_config: Config, alembic_engine: Engine) -> None:
    upgrade_with(alembic_config, alembic_engine)
    assert version_in(alembic_engine) == set(head_revisions())
    # The Engine is the caller's: still usable after the upgrade.
    command.downgrade(alembic_config, "base")
    with alembic_engine.connect() as connection:
        assert "adapter" not in inspect(connection).get_table_names()


def test_env_accepts_a_connection(alembic_config: Config, alembic_engine: Engine) -> None:
    with alembic_engine.connect() as connection:
        upgrade_with(alembic_config, connection)
        assert isinstance(connection, Connection)
        assert not connection.closed  # the caller's connection stays open
    assert version_in(alembic_engine) == set(head_revisions())


def test_env_rejects_anything_else_with_a_clear_error(sqlite_url: str) -> None:
    config = make_alembic_config(load_settings(database_url=sqlite_url))
    with pytest.raises(CommandError, match=r"Connection or Engine, not str"):
        upgrade_with(config, sqlite_url)
