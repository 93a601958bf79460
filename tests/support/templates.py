"""Databases migrated once per module: each test's fresh database becomes a copy of one.

Running the whole migration chain for every test would dominate a module's runtime.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from lora_manager.core.config import Settings
from tests.support.migrate import runner_for
from tests.support.postgres import PostgresServer


@contextmanager
def settings_free_environment(folder: Path) -> Iterator[None]:
    """No env file and no setting from the environment: each test states what it uses."""
    names = {name.upper() for name in Settings.model_fields}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_MANAGER_ENV_FILE", str(folder / "none.env"))
        for name in list(os.environ):
            if name.upper() in names:
                patch.delenv(name)
        yield


class MigratedTemplates:
    """One database per kind migrated to head once, copied into each test's database."""

    def __init__(self, folder: Path, name: str = "tpl") -> None:
        self.folder = folder
        self.name = name
        self._sqlite: Path | None = None
        self._postgres: str | None = None

    def fill(self, url: str, request: pytest.FixtureRequest | None = None) -> None:
        """Turn the empty database at `url` (from `db_url` or `sqlite_url`) into one at head;
        PostgreSQL needs the test's `request` (for the `pg_server` fixture)."""
        target = make_url(url)
        if target.get_backend_name() == "sqlite":
            assert target.database is not None
            with (
                closing(sqlite3.connect(self._sqlite_template())) as source,
                closing(sqlite3.connect(target.database)) as copy,
            ):
                source.backup(copy)
            return
        assert request is not None
        server: PostgresServer = request.getfixturevalue("pg_server")
        if self._postgres is None:
            template = server.create_database(self.name)
            self._migrate(template)
            self._postgres = make_url(template).database
        with psycopg.connect(
            f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE "{target.database}"')
            admin.execute(f'CREATE DATABASE "{target.database}" TEMPLATE "{self._postgres}"')

    def _sqlite_template(self) -> Path:
        if self._sqlite is None:
            path = self.folder / "template.db"
            self._migrate(f"sqlite:///{path}")
            self._sqlite = path
        return self._sqlite

    def _migrate(self, url: str) -> None:
        runner_for(url, sqlite_backup_keep=0).upgrade()
