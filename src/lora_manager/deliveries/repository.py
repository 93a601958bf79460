"""Every query on `deliveryjob`: the API's reads and edits and the worker's lease protocol.

The row is the truth about a job; the queue only carries its id. Each state change is one
conditional UPDATE whose WHERE clause states what must still hold, so two workers (or a worker
and the API) racing on a job cannot both win: whoever's UPDATE matches a row owns the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lora_manager.core.models import DeliveryJob, utcnow

PENDING, RUNNING = "pending", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
STATUSES = (PENDING, RUNNING, *FINISHED)

_job = cast(Table, DeliveryJob.__table__)


def _changed(result: Any) -> bool:
    """Whether an UPDATE or DELETE matched a row."""
    return bool(result.rowcount)


# --- the API's side ---------------------------------------------------------------------------


def add_job(session: Session, job: DeliveryJob) -> DeliveryJob:
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> DeliveryJob | None:
    return session.get(DeliveryJob, job_id)


@dataclass(frozen=True)
class JobFilter:
    status: Sequence[str] = ()
    mode: Sequence[str] = ()
    favorite: bool | None = None
    rating: int | None = None
    min_rating: int | None = None
    rated: bool | None = None


_SORTS: dict[str, Any] = {
    "created_at": DeliveryJob.created_at,
    "finished_at": DeliveryJob.finished_at,
    "started_at": DeliveryJob.started_at,
    "rating": DeliveryJob.rating,
    "status": DeliveryJob.status,
}
SORT_KEYS = tuple(_SORTS)


def _filtered(query: Select[Any], where: JobFilter) -> Select[Any]:
    if where.status:
        query = query.where(DeliveryJob.status.in_(where.status))
    if where.mode:
        query = query.where(DeliveryJob.mode.in_(where.mode))
    if where.favorite is not None:
        query = query.where(DeliveryJob.is_favorite.is_(where.favorite))
    if where.rating is not None:
        query = query.where(DeliveryJob.rating == where.rating)
    if where.min_rating is not None:
        query = query.where(DeliveryJob.rating >= where.min_rating)
    if where.rated is not None:
        column = DeliveryJob.rating
        query = query.where(column.is_not(None) if where.rated else column.is_(None))
    return query


def list_jobs(
    session: Session, where: JobFilter, *, sort: str, descending: bool, limit: int, offset: int
) -> tuple[list[DeliveryJob], int]:
    """One page of jobs and the number matching; ties broken by id so pages never overlap."""
    total = session.scalar(_filtered(select(func.count()).select_from(DeliveryJob), where)) or 0
    column = _SORTS[sort]
    order = column.desc() if descending else column.asc()
    tie = DeliveryJob.id.desc() if descending else DeliveryJob.id.asc()
    # NULLs (unrated, unfinished) last in either direction, the same on SQLite and PostgreSQL.
    query = _filtered(select(DeliveryJob), where).order_by(column.is_(None), order, tie)
    return list(session.scalars(query.limit(limit).offset(offset))), total


def cancel_pending(session: Session, job_id: str) -> bool:
    """A pending job becomes cancelled at once; its queued message will find nothing to run."""
    now = utcnow()
    result = session.execute(
        update(DeliveryJob)
        .where(DeliveryJob.id == job_id, DeliveryJob.status == PENDING)
        .values(status=CANCELLED, finished_at=now, next_attempt_at=None, cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    return _changed(result)


def request_cancel(session: Session, job_id: str) -> bool:
    """Ask a running job's worker to stop; it notices at its next lease renewal."""
    result = session.execute(
        update(DeliveryJob)
        .where(DeliveryJob.id == job_id, DeliveryJob.status == RUNNING)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    return _changed(result)


def reset_for_retry(session: Session, job_id: str, max_attempts: int) -> bool:
    """A failed or cancelled job goes back to pending with a fresh set of attempts."""
    result = session.execute(
        update(DeliveryJob)
        .where(DeliveryJob.id == job_id, DeliveryJob.status.in_((FAILED, CANCELLED)))
        .values(
            status=PENDING,
            attempts=0,
            max_attempts=max_attempts,
            cancel_requested=False,
            result=None,
            progress=None,
            started_at=None,
            finished_at=None,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return _changed(result)


def delete_finished(session: Session, job_id: str) -> bool:
    """Delete a job that is not running (a running one must be cancelled first)."""
    result = session.execute(
        delete(DeliveryJob)
        .where(DeliveryJob.id == job_id, DeliveryJob.status != RUNNING)
        .execution_options(synchronize_session=False)
    )
    return _changed(result)


# --- the worker's side: claim, renew, finish, retry, sweep --------------------------------------


# The worker's two statements per job, built once (building them costs more than running them).
_CLAIM = (
    update(_job)
    .where(
        _job.c.id == bindparam("b_id"),
        _job.c.status == PENDING,
        or_(_job.c.next_attempt_at.is_(None), _job.c.next_attempt_at <= bindparam("b_now")),
    )
    .values(
        status=RUNNING,
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_expires"),
        attempts=_job.c.attempts + 1,
        started_at=func.coalesce(_job.c.started_at, bindparam("b_now")),
        next_attempt_at=None,
        progress=None,
    )
    .returning(*_job.c)
)


def claim(engine: Engine, job_id: str, owner: str, lease: float) -> dict[str, Any] | None:
    """Take a due pending job: it becomes running under `owner`'s lease, one attempt more.
    Returns the claimed row, or None when the job is not pending or not due."""
    now = utcnow()
    params = {
        "b_id": job_id,
        "b_now": now,
        "b_owner": owner,
        "b_expires": now + timedelta(seconds=lease),
    }
    with engine.begin() as connection:
        row = connection.execute(_CLAIM, params).mappings().first()
    return dict(row) if row is not None else None


def renew_leases(engine: Engine, owner: str, lease: float) -> tuple[set[str], set[str]]:
    """Extend every lease `owner` holds; returns (held job ids, those asked to cancel)."""
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            update(_job)
            .where(_job.c.lease_owner == owner, _job.c.status == RUNNING)
            .values(lease_expires_at=now + timedelta(seconds=lease))
        )
        rows = connection.execute(
            select(_job.c.id, _job.c.cancel_requested).where(
                _job.c.lease_owner == owner, _job.c.status == RUNNING
            )
        ).all()
    return {row.id for row in rows}, {row.id for row in rows if row.cancel_requested}


def set_progress(engine: Engine, job_id: str, owner: str, progress: float) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(_job)
            .where(_job.c.id == job_id, _job.c.lease_owner == owner, _job.c.status == RUNNING)
            .values(progress=progress)
        )


_FINISH = (
    update(_job)
    .where(
        _job.c.id == bindparam("b_id"),
        _job.c.lease_owner == bindparam("b_owner"),
        _job.c.status == RUNNING,
    )
    .values(
        status=bindparam("b_status"),
        finished_at=bindparam("b_now"),
        lease_owner=None,
        lease_expires_at=None,
        result=bindparam("b_result"),
        last_error=bindparam("b_error"),
        progress=func.coalesce(bindparam("b_progress"), _job.c.progress),
    )
)


def finish(
    engine: Engine,
    job_id: str,
    owner: str,
    *,
    status: str,
    result: str | None,
    error: str | None,
) -> bool:
    """End a job this owner still holds; False if its lease was lost (the result is dropped)."""
    params = {
        "b_id": job_id,
        "b_owner": owner,
        "b_status": status,
        "b_now": utcnow(),
        "b_result": result,
        "b_error": error,
        "b_progress": 1.0 if status == SUCCEEDED else None,
    }
    with engine.begin() as connection:
        return _changed(connection.execute(_FINISH, params))


def postpone(engine: Engine, job_id: str, owner: str, *, error: str, due: datetime) -> bool:
    """Hand a transiently failed job back to the queue for another attempt at `due`."""
    with engine.begin() as connection:
        outcome = connection.execute(
            update(_job)
            .where(_job.c.id == job_id, _job.c.lease_owner == owner, _job.c.status == RUNNING)
            .values(
                status=PENDING,
                lease_owner=None,
                lease_expires_at=None,
                last_error=error,
                next_attempt_at=due,
            )
        )
    return _changed(outcome)


def expired_leases(engine: Engine, limit: int = 500) -> list[tuple[str, int, int, bool]]:
    """Running jobs whose worker stopped renewing: (id, attempts, max_attempts, cancel)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(_job.c.id, _job.c.attempts, _job.c.max_attempts, _job.c.cancel_requested)
            .where(_job.c.status == RUNNING, _job.c.lease_expires_at < utcnow())
            .limit(limit)
        ).all()
    return [(row.id, row.attempts, row.max_attempts, row.cancel_requested) for row in rows]


def release_expired(engine: Engine, job_id: str, *, status: str, error: str) -> bool:
    """Take a job back from a dead worker, only if its lease is still expired."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": status,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": error,
    }
    if status in FINISHED:
        values["finished_at"] = now
    with engine.begin() as connection:
        outcome = connection.execute(
            update(_job)
            .where(_job.c.id == job_id, _job.c.status == RUNNING, _job.c.lease_expires_at < now)
            .values(**values)
        )
    return _changed(outcome)


def overdue_pending(engine: Engine, older_than: float, limit: int = 1000) -> list[str]:
    """Pending jobs due for longer than `older_than` seconds: their message may be lost."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    due = func.coalesce(_job.c.next_attempt_at, _job.c.created_at)
    with engine.connect() as connection:
        rows = connection.execute(
            select(_job.c.id)
            .where(and_(_job.c.status == PENDING, due < cutoff))
            .order_by(due)
            .limit(limit)
        ).all()
    return [row.id for row in rows]


def release_owned(engine: Engine, owner: str) -> list[str]:
    """A worker shutting down hands its unfinished jobs back; the cut attempt does not count."""
    where = and_(_job.c.lease_owner == owner, _job.c.status == RUNNING)
    with engine.begin() as connection:
        ids = [row.id for row in connection.execute(select(_job.c.id).where(where))]
        if ids:
            connection.execute(
                update(_job)
                .where(where, _job.c.id.in_(ids))
                .values(
                    status=PENDING,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=_job.c.attempts - 1,
                    last_error="worker shut down before the job ended",
                )
            )
    return ids
