"""Recommendation routes: parse, call the recommender, shape the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from lora_manager.core.dependencies import app_queue, db_session
from lora_manager.core.queue import JobQueue
from lora_manager.core.responses import INVALID, UNAUTHORIZED, Responses
from lora_manager.recommendations import service
from lora_manager.recommendations.schemas import (
    EmbeddingRunOut,
    FeedbackIn,
    ForPromptIn,
    PreferenceOut,
    PreferencesIn,
    RecommendationsOut,
    RecomputeIn,
    StatsOut,
)
from lora_manager.recommendations.service import Answer, Recommender

router = APIRouter(prefix="/recommendations", tags=["recommendations"])
Db = Annotated[Session, Depends(db_session)]
ERRORS: Responses = {
    **UNAUTHORIZED,
    404: {"description": "No such adapter, session or run"},
    **INVALID,
    503: {"description": "Database unreachable, schema behind, or embedder not installed"},
}


async def _recommender(request: Request) -> Recommender:  # async: no thread hand-off
    recommender: Recommender = request.app.state.recommender
    return recommender


Rec = Annotated[Recommender, Depends(_recommender)]
Queue = Annotated[JobQueue, Depends(app_queue)]


def _out(answer: Answer) -> RecommendationsOut:
    assert answer.session_id is not None
    return RecommendationsOut.model_validate(
        {"session_id": answer.session_id, "items": answer.items, "hint": answer.hint}
    )


@router.get(
    "/similar/{adapter_id}",
    response_model=RecommendationsOut,
    responses=ERRORS,
    summary="Adapters like this one",
)
def similar(
    adapter_id: str,
    session: Db,
    recommender: Rec,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    same_base_model: Annotated[
        bool, Query(description="Only adapters for the same base model")
    ] = True,
    exclude: Annotated[list[str], Query(description="Leave these adapters out")] = [],  # noqa: B006
    min_score: Annotated[float, Query(ge=-1, le=1, description="Lowest similarity")] = 0.0,
) -> RecommendationsOut:
    return _out(
        recommender.similar(
            session,
            adapter_id,
            limit=limit,
            same_base_model=same_base_model,
            exclude=exclude,
            min_score=min_score,
        )
    )


@router.post(
    "/for-prompt",
    response_model=RecommendationsOut,
    responses=ERRORS,
    summary="Adapters that suit a prompt and the adapters already in use",
)
def for_prompt(body: ForPromptIn, session: Db, recommender: Rec) -> RecommendationsOut:
    return _out(
        recommender.for_prompt(
            session,
            body.prompt,
            body.active_adapter_ids,
            limit=body.limit,
            base_model=body.base_model,
        )
    )


@router.get(
    "/by-trigger",
    response_model=RecommendationsOut,
    responses=ERRORS,
    summary="Adapters whose trigger words match, exactly or nearly",
)
def by_trigger(
    session: Db,
    recommender: Rec,
    q: Annotated[str, Query(min_length=1, max_length=200, examples=["inkwash"])],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> RecommendationsOut:
    return _out(recommender.by_trigger(session, q, limit=limit))


@router.post(
    "/feedback",
    status_code=201,
    responses=ERRORS,
    summary="Say what you thought of a suggestion (it moves later rankings)",
)
def feedback(body: FeedbackIn, session: Db) -> dict[str, str]:
    service.record_feedback(
        session, body.session_id, body.adapter_id, body.feedback.value, body.reason
    )
    return {"status": "recorded"}


def _preferences(found: Sequence[service.Preference]) -> list[PreferenceOut]:
    return [
        PreferenceOut(
            type=p.preference_type,
            value=p.preference_value,
            weight=p.confidence,
            learned_from=p.learned_from,
            updated_at=p.updated_at,
        )
        for p in found
    ]


@router.get(
    "/preferences", response_model=list[PreferenceOut], responses=ERRORS, summary="Preferences"
)
def get_preferences(session: Db) -> list[PreferenceOut]:
    return _preferences(service.preferences(session))


@router.put(
    "/preferences",
    response_model=list[PreferenceOut],
    responses=ERRORS,
    summary="Replace your explicit preferences (tags, base models, authors)",
)
def put_preferences(body: PreferencesIn, session: Db) -> list[PreferenceOut]:
    wanted = {(p.type.value, p.value.strip().lower()): p.weight for p in body.preferences}
    return _preferences(
        service.set_preferences(session, [(kind, value, w) for (kind, value), w in wanted.items()])
    )


@router.post(
    "/embeddings/recompute",
    response_model=EmbeddingRunOut,
    status_code=202,
    responses=ERRORS,
    summary="Queue a (re)computation of embeddings; a worker carries it out",
)
def recompute(body: RecomputeIn, session: Db, recommender: Rec, queue: Queue) -> EmbeddingRunOut:
    run = service.queue_run(session, queue, recommender.index.model, body.adapter_ids, body.force)
    return EmbeddingRunOut.model_validate(run, from_attributes=True)


@router.get(
    "/embeddings/runs/{run_id}",
    response_model=EmbeddingRunOut,
    responses=ERRORS,
    summary="An embedding run's progress",
)
def get_run(run_id: str, session: Db) -> EmbeddingRunOut:
    run = service.get_run(session, run_id)
    return EmbeddingRunOut.model_validate(run, from_attributes=True)


@router.get("/stats", response_model=StatsOut, responses=ERRORS, summary="Coverage and index")
def stats(session: Db, recommender: Rec) -> StatsOut:
    return StatsOut.model_validate(recommender.stats(session))
