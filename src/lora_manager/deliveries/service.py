"""The rules of delivery jobs: what may be queued, cancelled, retried, rated and deleted.

A job is committed before its id is queued, so a worker never sees an id without a row; if the
queue cannot be reached the row stays pending and a worker's sweeper queues it later.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from lora_manager.catalog import repository as catalog
from lora_manager.core.config import Settings
from lora_manager.core.errors import ConflictError, InvalidInputError, NotFoundError
from lora_manager.core.models import DeliveryJob, utcnow
from lora_manager.core.paths import inside
from lora_manager.core.queue import JobQueue, QueueError
from lora_manager.deliveries import repository as jobs
from lora_manager.deliveries.backends import BACKENDS
from lora_manager.deliveries.compose import Composition, compose
from lora_manager.deliveries.repository import JobFilter
from lora_manager.deliveries.schemas import ComposeIn, DeliverySpec, JobOut, JobPage
from lora_manager.deliveries.tasks import enqueue_delivery

log = logging.getLogger(__name__)


def check_params(settings: Settings, mode: str, params: dict[str, Any]) -> dict[str, Any]:
    """The mode's parameters, checked now so a job that cannot run is never queued."""
    backend = BACKENDS.get(mode)
    if backend is None:
        raise InvalidInputError(f"unknown mode {mode!r}")
    return backend.check_params(settings, params)


def compose_from(session: Session, body: ComposeIn) -> Composition:
    """Compose from the given adapters (in that order) or from the active ones."""
    if body.adapter_ids is None:
        adapters = catalog.active_adapters(session)
    else:
        found = {a.id: a for a in catalog.get_adapters(session, body.adapter_ids)}
        unknown = [i for i in body.adapter_ids if i not in found]
        if unknown:
            raise InvalidInputError(f"unknown adapter ids: {', '.join(unknown)}")
        adapters = [found[i] for i in dict.fromkeys(body.adapter_ids)]
    return compose(
        adapters,
        prefix=body.prefix,
        suffix=body.suffix,
        negative_prompt=body.negative_prompt,
        include_triggers=body.include_triggers,
        weights=body.weights,
    )


def queue_job(
    session: Session,
    settings: Settings,
    queue: JobQueue,
    spec: DeliverySpec,
    *,
    prompt: str,
    negative_prompt: str | None,
    adapters: list[dict[str, Any]],
) -> DeliveryJob:
    params = check_params(settings, spec.mode.value, spec.params)
    if not prompt.strip():
        raise InvalidInputError("the prompt is empty (no prompt given and no adapter composed)")
    job = jobs.add_job(
        session,
        DeliveryJob(
            prompt=prompt,
            negative_prompt=negative_prompt,
            adapters=adapters,
            mode=spec.mode.value,
            params=json.dumps(params),
            status=jobs.PENDING,
            attempts=0,
            max_attempts=spec.max_attempts or settings.job_max_attempts,
            created_at=utcnow(),
        ),
    )
    session.commit()
    _enqueue(queue, job.id)
    return job


def _enqueue(queue: JobQueue, job_id: str) -> None:
    try:
        enqueue_delivery(queue, job_id)
    except QueueError as exc:
        log.warning(
            "job %s saved but not queued (%s); a worker's sweeper will queue it", job_id, exc
        )


def page(
    session: Session,
    where: JobFilter,
    *,
    sort: str,
    descending: bool,
    limit: int,
    offset: int,
) -> JobPage:
    """One page of jobs matching `where`, with the total."""
    items, total = jobs.list_jobs(
        session, where, sort=sort, descending=descending, limit=limit, offset=offset
    )
    return JobPage(total=total, limit=limit, offset=offset, items=[job_out(j) for j in items])


def require(session: Session, job_id: str) -> DeliveryJob:
    job = jobs.get_job(session, job_id)
    if job is None:
        raise NotFoundError(f"no delivery job {job_id}")
    return job


def cancel(session: Session, job_id: str) -> DeliveryJob:
    """Pending: cancelled now, never runs. Running: its worker is asked to stop."""
    job = require(session, job_id)
    if not jobs.cancel_pending(session, job_id) and not jobs.request_cancel(session, job_id):
        session.refresh(job)
        if job.status in jobs.FINISHED:
            raise ConflictError(f"job {job_id} already {job.status}")
    session.commit()
    session.refresh(job)
    return job


def retry(session: Session, settings: Settings, queue: JobQueue, job_id: str) -> DeliveryJob:
    """A failed or cancelled job runs again, with its attempts counted afresh."""
    job = require(session, job_id)
    if not jobs.reset_for_retry(session, job_id, job.max_attempts or settings.job_max_attempts):
        session.refresh(job)
        raise ConflictError(
            f"only failed or cancelled jobs are retried; job {job_id} is {job.status}"
        )
    session.commit()
    session.refresh(job)
    _enqueue(queue, job_id)
    return job


def set_rating(session: Session, job_id: str, rating: int | None) -> DeliveryJob:
    job = require(session, job_id)
    job.rating = rating
    job.rating_updated_at = utcnow()
    session.commit()
    return job


def set_favorite(session: Session, job_id: str, favorite: bool) -> DeliveryJob:
    job = require(session, job_id)
    job.is_favorite = favorite
    job.favorite_updated_at = utcnow()
    session.commit()
    return job


def delete(session: Session, settings: Settings, job_id: str) -> None:
    """Delete a job that is not running, and its saved images."""
    require(session, job_id)
    if not jobs.delete_finished(session, job_id):
        raise ConflictError(f"job {job_id} is running; cancel it first")
    session.commit()
    folder = _results_folder(settings, job_id)
    if folder is not None and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def result_image(settings: Settings, job: DeliveryJob, index: int) -> Path:
    """The n-th image a job produced, as a file inside RESULTS_DIR."""
    images = image_names(job)
    if not 0 <= index < len(images):
        raise NotFoundError(f"job {job.id} has {len(images)} image(s); no image {index}")
    root = Path(settings.results_dir).resolve()
    path = (root / images[index]).resolve()
    if not inside(path, [root]) or not path.is_file():
        raise NotFoundError(f"image {index} of job {job.id} is no longer on disk")
    return path


def _results_folder(settings: Settings, job_id: str) -> Path | None:
    root = Path(settings.results_dir).resolve()
    folder = (root / job_id).resolve()
    return folder if inside(folder, [root]) and folder != root else None


def image_names(job: DeliveryJob) -> list[str]:
    summary = _loads(job.result)
    images = summary.get("images") if isinstance(summary, dict) else None
    return [str(name) for name in images] if isinstance(images, list) else []


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def job_out(job: DeliveryJob, base_url: str = "/v1/deliveries") -> JobOut:
    result = _loads(job.result)
    params = _loads(job.params)
    count = len(image_names(job))
    return JobOut(
        id=job.id,
        status=job.status,
        mode=job.mode,
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        adapters=list(job.adapters or []),
        params=params if isinstance(params, dict) else {},
        result=result if isinstance(result, dict) else None,
        images=[f"{base_url}/{job.id}/results/{n}" for n in range(count)],
        attempts=job.attempts or 0,
        max_attempts=job.max_attempts or 0,
        last_error=job.last_error,
        progress=job.progress,
        cancel_requested=bool(job.cancel_requested),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        next_attempt_at=job.next_attempt_at,
        rating=job.rating,
        rating_updated_at=job.rating_updated_at,
        is_favorite=bool(job.is_favorite),
        favorite_updated_at=job.favorite_updated_at,
    )
