"""A migrated catalog and imports into it, for the importer's tests: `Importer.run` on a
database of either kind, and `lora-manager import` as a process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from lora_manager.catalog import service as catalog_service
from lora_manager.catalog.schemas import ActivateIn
from lora_manager.core.config import Settings, load_settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.models import Adapter, AdapterTag
from lora_manager.ingest.service import Importer, ImportSummary
from tests.support.migrate import migrate


@dataclass
class Catalog:
    """One migrated database with its engine, and the library root it imports from."""

    url: str
    root: Path
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]

    def run(self, roots: list[Path] | None = None, *, dry_run: bool = False) -> ImportSummary:
        importer = Importer(self.settings, self.factory, echo=lambda _: None, dry_run=dry_run)
        return importer.run(roots or [self.root])

    def adapters(self) -> list[Adapter]:
        with self.factory() as session:
            return list(session.scalars(select(Adapter).order_by(Adapter.file_path)))

    def adapter(self, path: Path) -> Adapter:
        """The one adapter of the file at `path` (by its real path)."""
        matches = [a for a in self.adapters() if a.real_path == os.path.realpath(path)]
        assert len(matches) == 1, f"{len(matches)} adapters for {path}"
        return matches[0]

    def count(self) -> int:
        with self.factory() as session:
            return int(session.scalar(select(func.count()).select_from(Adapter)) or 0)

    def snapshot(self) -> dict[str, Any]:
        """Every adapter row and tag row, to prove that nothing changed."""
        with self.factory() as session:
            adapters = {a.id: row_dict(a) for a in session.scalars(select(Adapter))}
            tags = sorted(
                (t.adapter_id, t.tag, t.is_user) for t in session.scalars(select(AdapterTag))
            )
        return {"adapters": adapters, "tags": tags}

    def set_user_fields(self, adapter_id: str, *, tags: list[str], **values: Any) -> None:
        """What a user sets through the catalog: favourite, rating, notes, activation, tags."""
        with self.factory() as session:
            adapter = catalog_service.require(session, adapter_id)
            catalog_service.set_favorite(adapter, values.get("is_favorite", True))
            catalog_service.set_rating(adapter, values.get("rating", 4))
            adapter.notes = values.get("notes", "my own notes")
            catalog_service.activate(
                session,
                adapter,
                ActivateIn(weight=values.get("weight", 0.35), ordinal=values.get("ordinal", 7)),
            )
            catalog_service.set_user_tags(session, adapter, tags)
            session.commit()


def row_dict(adapter: Adapter) -> dict[str, Any]:
    return {column.key: getattr(adapter, column.key) for column in Adapter.__table__.columns}


@contextmanager
def open_catalog(url: str, root: Path, *, migrated: bool = False) -> Iterator[Catalog]:
    """The catalog at `url` (upgraded to head first unless `migrated`), importing `root`."""
    if not migrated:
        migrate(url)
    settings = load_settings(database_url=url, lora_roots=[str(root)])
    engine = make_engine(settings)
    try:
        yield Catalog(url, root, settings, engine, make_session_factory(engine))
    finally:
        engine.dispose()


def import_cli(
    args: list[str], env: dict[str, str], url: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """`lora-manager import ARGS` on the database at `url`, to its end (at most two minutes)."""
    return subprocess.run(
        ["lora-manager", "import", *args],
        env={**env, "DATABASE_URL": url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
