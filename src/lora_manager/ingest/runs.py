"""Imports started through the API: recorded in `importrun`, run in a background thread.

A run is pending, then running, then succeeded or failed; or interrupted, when the process
running it died (killed, crashed, restarted). A running import saves its progress with a
heartbeat every few seconds; a run whose last sign of life is older than `STALE_AFTER` is
marked interrupted when runs are read, and at API start-up every pending or running run is,
unless some process holds the import lock (an import is really under way)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from lora_manager.core.config import Settings
from lora_manager.core.db import short_error
from lora_manager.core.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    LockTimeoutError,
    LoraManagerError,
)
from lora_manager.core.models import ImportRun, utcnow
from lora_manager.core.paths import inside, real
from lora_manager.ingest.progress import RecordingProgress
from lora_manager.ingest.service import Importer
from lora_manager.recommendations.service import refresh_after_import

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_AFTER = 60.0  # twelve heartbeats missed
_UNFINISHED = ("pending", "running")


def choose_roots(settings: Settings, paths: Sequence[str]) -> list[str]:
    """The folders to import: given ones (inside the roots only), else every root.

    The one confinement check of POST /v1/imports and `lora-manager import`."""
    roots = settings.resolved_roots
    if not roots:
        raise ConflictError("no library roots are configured: set LORA_ROOTS to your folders")
    if not paths:
        return [str(root) for root in roots]
    chosen = []
    for path in paths:
        if not inside(path, roots):
            raise ForbiddenError(f"{path} is outside the library roots")
        if not Path(path).is_dir():
            raise InvalidInputError(f"{path} is not a folder")
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
    progress = RecordingProgress(
        lambda state: _update(factory, run_id, progress={**state, "heartbeat_at": _stamp()}),
        heartbeat=HEARTBEAT_SECONDS,
    )
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
            refresh_after_import(factory, settings)


def recent_runs(session: Session, limit: int) -> list[ImportRun]:
    interrupt_stale_runs(session)
    query = select(ImportRun).order_by(ImportRun.created_at.desc(), ImportRun.id).limit(limit)
    return list(session.scalars(query).all())


def get_run(session: Session, run_id: str) -> ImportRun | None:
    interrupt_stale_runs(session)
    return session.get(ImportRun, run_id)


def _stamp() -> str:
    return utcnow().isoformat(timespec="seconds")


def last_sign_of_life(run: ImportRun) -> datetime:
    """The run's last heartbeat, else when it started, else when it was created."""
    beat = (run.progress or {}).get("heartbeat_at")
    try:
        return datetime.fromisoformat(beat) if isinstance(beat, str) else _start(run)
    except ValueError:
        return _start(run)


def _start(run: ImportRun) -> datetime:
    return run.started_at or run.created_at


def interrupt_stale_runs(session: Session, *, now: datetime | None = None) -> list[str]:
    """Mark interrupted every pending or running run silent for over STALE_AFTER seconds;
    returns their ids."""
    now = now or utcnow()
    stale = [
        run
        for run in _unfinished(session)
        if now - last_sign_of_life(run) > timedelta(seconds=STALE_AFTER)
    ]
    for run in stale:
        since = last_sign_of_life(run).isoformat(sep=" ", timespec="seconds")
        _interrupt(run, now, f"no sign of life from the process running it since {since} UTC")
    if stale:  # reads call this: commit only when a run was marked
        session.commit()
    return [run.id for run in stale]


def interrupt_dead_runs(factory: sessionmaker[Session], settings: Settings) -> list[str]:
    """At API start-up: with no process holding the import lock, no import is under way, so
    every pending or running run belongs to a process that died. Returns their ids."""
    importer = Importer(settings, factory, echo=lambda _: None)
    with factory() as session:
        try:
            with importer.lock(timeout=0):
                dead = _unfinished(session)
                for run in dead:
                    _interrupt(run, utcnow(), "the process running it stopped before the end")
                session.commit()
                return [run.id for run in dead]
        except LockTimeoutError:  # an import is under way: only silent runs are dead
            return interrupt_stale_runs(session)
        except SQLAlchemyError as exc:  # no importrun table yet: the schema gate says so
            log.warning("import runs not checked at start-up: %s", short_error(exc))
            return []


def _unfinished(session: Session) -> list[ImportRun]:
    return list(session.scalars(select(ImportRun).where(ImportRun.status.in_(_UNFINISHED))))


def _interrupt(run: ImportRun, now: datetime, reason: str) -> None:
    log.warning("import %s interrupted: %s", run.id, reason)
    run.status = "interrupted"
    run.error = f"interrupted: {reason}"
    run.finished_at = now
