"""Compose and delivery-job routes: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from lora_manager.core.config import Settings
from lora_manager.core.dependencies import app_queue, app_settings, db_session
from lora_manager.core.queue import JobQueue
from lora_manager.core.responses import DATABASE_UNAVAILABLE, UNAUTHORIZED, Responses
from lora_manager.deliveries import service
from lora_manager.deliveries.compose import Composition
from lora_manager.deliveries.schemas import (
    ComposeAndDeliverIn,
    ComposeAndDeliverOut,
    ComposedAdapterOut,
    DeliveryIn,
    JobFavoriteIn,
    JobOut,
    JobPage,
    JobRatingIn,
    JobSort,
    JobStatus,
    Mode,
    SkippedOut,
)

router = APIRouter(tags=["compose"])
jobs_router = APIRouter(prefix="/deliveries", tags=["deliveries"])
Db = Annotated[Session, Depends(db_session)]
ERRORS: Responses = {
    **UNAUTHORIZED,
    422: {"description": "Unknown adapter ids or invalid parameters"},
    **DATABASE_UNAVAILABLE,
}
JOB_ERRORS: Responses = {
    **ERRORS,
    404: {"description": "No such job"},
    409: {"description": "Not allowed in the job's current status"},
}


Config = Annotated[Settings, Depends(app_settings)]
Queue = Annotated[JobQueue, Depends(app_queue)]


def _composed(result: Composition) -> list[dict[str, Any]]:
    return [vars(adapter) for adapter in result.adapters]


@router.post(
    "/compose",
    response_model=ComposeAndDeliverOut,
    responses=ERRORS,
    summary="Build a prompt from the active adapters (or the ones given); optionally queue it",
)
def compose_prompt(
    body: ComposeAndDeliverIn, session: Db, settings: Config, queue: Queue
) -> ComposeAndDeliverOut:
    result = service.compose_from(session, body)
    job = None
    if body.deliver is not None:
        job = service.queue_job(
            session,
            settings,
            queue,
            body.deliver,
            prompt=result.prompt,
            negative_prompt=result.negative_prompt,
            adapters=_composed(result),
        )
    return ComposeAndDeliverOut(
        prompt=result.prompt,
        negative_prompt=result.negative_prompt,
        adapters=[ComposedAdapterOut(**vars(a)) for a in result.adapters],
        triggers=result.triggers,
        skipped=[SkippedOut(**s) for s in result.skipped],
        job=service.job_out(job) if job is not None else None,
    )


@jobs_router.post(
    "",
    response_model=JobOut,
    status_code=201,
    responses=ERRORS,
    summary="Queue a delivery of a prompt (typed, or composed in the same call)",
)
def create_delivery(body: DeliveryIn, session: Db, settings: Config, queue: Queue) -> JobOut:
    if body.compose is not None:
        result = service.compose_from(session, body.compose)
        prompt, negative, adapters = result.prompt, result.negative_prompt, _composed(result)
    else:
        prompt, negative, adapters = body.prompt or "", body.negative_prompt, []
    job = service.queue_job(
        session, settings, queue, body, prompt=prompt, negative_prompt=negative, adapters=adapters
    )
    return service.job_out(job)


@jobs_router.get("", response_model=JobPage, responses=ERRORS, summary="List delivery jobs")
def list_deliveries(
    session: Db,
    status: Annotated[list[JobStatus], Query(description="Any of these statuses")] = [],  # noqa: B006
    mode: Annotated[list[Mode], Query(description="Any of these modes")] = [],  # noqa: B006
    favorite: bool | None = None,
    rating: Annotated[int | None, Query(ge=1, le=5, description="Exactly this rating")] = None,
    rating_min: Annotated[int | None, Query(ge=1, le=5)] = None,
    rated: Annotated[bool | None, Query(description="Has a rating (true) or not")] = None,
    sort: JobSort = JobSort.created_at,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JobPage:
    where = service.JobFilter(
        status=[s.value for s in status],
        mode=[m.value for m in mode],
        favorite=favorite,
        rating=rating,
        min_rating=rating_min,
        rated=rated,
    )
    return service.page(
        session, where, sort=sort.value, descending=order == "desc", limit=limit, offset=offset
    )


@jobs_router.get("/{job_id}", response_model=JobOut, responses=JOB_ERRORS, summary="One job")
def get_delivery(job_id: str, session: Db) -> JobOut:
    return service.job_out(service.require(session, job_id))


@jobs_router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses=JOB_ERRORS,
    summary="Cancel: a pending job never runs, a running one is asked to stop",
)
def cancel_delivery(job_id: str, session: Db) -> JobOut:
    return service.job_out(service.cancel(session, job_id))


@jobs_router.post(
    "/{job_id}/retry",
    response_model=JobOut,
    responses=JOB_ERRORS,
    summary="Run a failed or cancelled job again",
)
def retry_delivery(job_id: str, session: Db, settings: Config, queue: Queue) -> JobOut:
    return service.job_out(service.retry(session, settings, queue, job_id))


@jobs_router.put(
    "/{job_id}/rating", response_model=JobOut, responses=JOB_ERRORS, summary="Rate 1 to 5, or clear"
)
def rate_delivery(job_id: str, body: JobRatingIn, session: Db) -> JobOut:
    return service.job_out(service.set_rating(session, job_id, body.rating))


@jobs_router.put(
    "/{job_id}/favorite", response_model=JobOut, responses=JOB_ERRORS, summary="Star or unstar"
)
def favorite_delivery(job_id: str, body: JobFavoriteIn, session: Db) -> JobOut:
    return service.job_out(service.set_favorite(session, job_id, body.favorite))


@jobs_router.delete(
    "/{job_id}",
    status_code=204,
    responses=JOB_ERRORS,
    summary="Delete a job that is not running, and its images",
)
def delete_delivery(job_id: str, session: Db, settings: Config) -> Response:
    service.delete(session, settings, job_id)
    return Response(status_code=204)


@jobs_router.get(
    "/{job_id}/results/{index}",
    response_class=FileResponse,
    responses={**JOB_ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    summary="An image the job produced (0-based)",
)
def delivery_result(
    job_id: str, index: Annotated[int, Path(ge=0, le=1000)], session: Db, settings: Config
) -> FileResponse:
    job = service.require(session, job_id)
    return FileResponse(service.result_image(settings, job, index))
