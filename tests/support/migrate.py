"""Migrating a test's database quietly: the runner the tests build, and an upgrade in one call."""

from __future__ import annotations

from lora_manager.core.config import load_settings
from lora_manager.core.migrations import MigrationRunner


def runner_for(url: str, messages: list[str] | None = None, **settings: object) -> MigrationRunner:
    """A runner on `url` with these settings; its messages go to `messages` (dropped if None)."""
    sink = messages.append if messages is not None else (lambda _: None)
    return MigrationRunner(load_settings(database_url=url, **settings), echo=sink)


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision`."""
    runner_for(url).upgrade(revision)
