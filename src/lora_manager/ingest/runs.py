"""Imports started through the API: recorded in `importrun`, run in a background thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lora_manager.api.errors import ApiError
from lora_manager.config import Settings
from lora_manager.errors import LoraManagerError
from lora_manager.ingest.progress import RecordingProgress
from lora_manager.ingest.service import Importer
from lora_manager.models import ImportRun, utcnow
from lora_manager.paths import inside, real

log = logging.getLogger(__name__)


def choose_roots(settings: Settings, paths: Sequence[str]) -> list[str]:
    """The folders to import: given ones (inside the roots only), else every root.

    The one confinement check of POST /v1/imports and `lora-manager import`."""
    roots = settings.resolved_roots
    if not roots:
        raise ApiError("no library roots are configured: set LORA_ROOTS to your folders", 409)
    if not paths:
        return [str(root) for root in roots]
    chosen = []
    for path in paths:
        if not inside(path, roots):
            raise ApiError(f"{path} is outside the library roots", 403)
        if not Path(path).is_dir():
            raise ApiError(f"{path} is not a folder", 422)
        chosen.append(str(real(path)))
    return chosen


def start_import(
    session: Session,
    factory: sessionmaker[Session],
    settings: Settings,
    roots: list[str],
    dry_run: bool,
) -> ImportRun:
    run = ImportRun(status="pending", roots=roots, dry_run=dry_run, created_at=utcnow())
    session.add(run)
    session.commit()
    thread = threading.Thread(
        target=_execute, args=(factory, settings, run.id), name=f"import-{run.id}", daemon=True
    )
    thread.start()
    return run


def _update(factory: sessionmaker[Session], run_id: str, **values: Any) -> None:
    with factory() as session:
        run = session.get(ImportRun, run_id)
        if run is not None:
            for key, value in values.items():
                setattr(run, key, value)
            session.commit()


def _execute(factory: sessionmaker[Session], settings: Settings, run_id: str) -> None:
    with factory() as session:
        run = session.get(ImportRun, run_id)
        if run is None:
            return
        roots, dry_run = [Path(root) for root in run.roots], run.dry_run
    _update(factory, run_id, status="running", started_at=utcnow())
    progress = RecordingProgress(lambda state: _update(factory, run_id, progress=state))
    try:
        try:
            summary = Importer(settings, factory, progress=progress, dry_run=dry_run).run(roots)
        finally:
            progress.close()
    except LoraManagerError as exc:
        _update(factory, run_id, status="failed", error=str(exc), finished_at=utcnow())
    except Exception as exc:  # the thread must record every ending, never die silently
        log.exception("import %s failed", run_id)
        _update(
            factory,
            run_id,
            status="failed",
            error=f"internal error: {type(exc).__name__}",
            finished_at=utcnow(),
        )
    else:
        _update(
            factory,
            run_id,
            status="succeeded",
            summary=summary.to_dict(),
            progress=dict(progress.state),
            finished_at=utcnow(),
        )
        if summary.changed_catalog:
            # Imported here: the recommendations import the API, which imports this module.
            from lora_manager.recommendations.service import refresh_after_import

            refresh_after_import(factory, settings)


def recent_runs(session: Session, limit: int) -> list[ImportRun]:
    query = select(ImportRun).order_by(ImportRun.created_at.desc(), ImportRun.id).limit(limit)
    return list(session.scalars(query).all())
