"""Every query of the recommendations: vectors, runs, signals, sessions, feedback, preferences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import BindParameter, Table, and_, bindparam, case, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lora_manager.core.models import (
    Adapter,
    EmbeddingRun,
    LoraEmbedding,
    RecommendationFeedback,
    RecommendationSession,
    UserPreference,
    new_id,
    utcnow,
)

_SESSIONS = cast(Table, RecommendationSession.__table__)
POSITIVE = ("positive", "used")
NEGATIVE = ("negative", "dismissed")


# --- embeddings -------------------------------------------------------------------------------


def adapters_page(
    session: Session, after: str | None, limit: int, only: Sequence[str] | None
) -> list[tuple[Adapter, LoraEmbedding | None]]:
    """Adapters in id order after `after`, each with its stored embedding row (if any)."""
    query = (
        select(Adapter, LoraEmbedding)
        .outerjoin(LoraEmbedding, LoraEmbedding.adapter_id == Adapter.id)
        .order_by(Adapter.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Adapter.id > after)
    if only is not None:
        query = query.where(Adapter.id.in_(only))
    return [(row[0], row[1]) for row in session.execute(query)]


def count_adapters(session: Session, only: Sequence[str] | None = None) -> int:
    query = select(func.count()).select_from(Adapter)
    if only is not None:
        query = query.where(Adapter.id.in_(only))
    return int(session.scalar(query) or 0)


def embedding_counts(session: Session, model: str) -> tuple[int, int]:
    """(vectors of this model, vectors of any other model)."""
    current = case((LoraEmbedding.embedding_model == model, 1), else_=0)
    other = case((LoraEmbedding.embedding_model == model, 0), else_=1)
    row = session.execute(
        select(func.coalesce(func.sum(current), 0), func.coalesce(func.sum(other), 0)).where(
            LoraEmbedding.semantic_embedding.is_not(None)
        )
    ).one()
    return int(row[0]), int(row[1])


def get_run(session: Session, run_id: str) -> EmbeddingRun | None:
    return session.get(EmbeddingRun, run_id)


def open_run_exists(session: Session, model: str) -> bool:
    """A run of this model is waiting or running."""
    query = select(EmbeddingRun.id).where(
        EmbeddingRun.model == model, EmbeddingRun.status.in_(("pending", "running"))
    )
    return session.execute(query.limit(1)).first() is not None


def claim_run(session: Session, run_id: str) -> bool:
    result = session.execute(
        update(EmbeddingRun)
        .where(EmbeddingRun.id == run_id, EmbeddingRun.status == "pending")
        .values(status="running", started_at=utcnow(), heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_stalled_runs(engine: Engine, stalled_after: float) -> list[str]:
    """Running runs whose worker stopped beating go back to pending (vectors already stored
    are kept; the next attempt skips them)."""
    cutoff = utcnow() - timedelta(seconds=stalled_after)
    runs = cast(Table, EmbeddingRun.__table__)
    beat = func.coalesce(runs.c.heartbeat_at, runs.c.started_at, runs.c.created_at)
    where = and_(runs.c.status == "running", beat < cutoff)
    with engine.begin() as connection:
        ids = [row.id for row in connection.execute(select(runs.c.id).where(where))]
        if ids:
            connection.execute(
                update(runs).where(where, runs.c.id.in_(ids)).values(status="pending")
            )
    return ids


def overdue_runs(engine: Engine, older_than: float) -> list[str]:
    """Pending runs waiting longer than `older_than` seconds: their message may be lost."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    runs = cast(Table, EmbeddingRun.__table__)
    with engine.connect() as connection:
        rows = connection.execute(
            select(runs.c.id).where(runs.c.status == "pending", runs.c.created_at < cutoff)
        )
        return [row.id for row in rows]


# --- what ranking reads -----------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterFacts:
    """The few columns of an adapter that ranking and answers use (not the whole row)."""

    id: str
    name: str
    base_model: str | None
    author_username: str | None
    rating: int | None
    is_favorite: bool
    tags: frozenset[str]


# Built once: every recommendation answer runs these, and building and keying a statement
# costs more than SQLite takes to answer it. `ids` is an expanding IN parameter.
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_A = cast(Table, Adapter.__table__).c
_F = cast(Table, RecommendationFeedback.__table__).c
_FACT_COLUMNS = (
    _A.id,
    _A.name,
    _A.base_model,
    _A.author_username,
    _A.rating,
    _A.is_favorite,
    _A.tags,
    _A.user_tags,
)
_FACTS = select(*_FACT_COLUMNS).where(_A.id.in_(_IDS))
_COUNTS = (
    select(
        _F.recommended_lora_id.label("adapter_id"),
        func.sum(case((_F.feedback_type.in_(POSITIVE), 1), else_=0)).label("positives"),
        func.sum(case((_F.feedback_type.in_(NEGATIVE), 1), else_=0)).label("negatives"),
    )
    .where(_F.recommended_lora_id.in_(_IDS))
    .group_by(_F.recommended_lora_id)
    .subquery()
)
_SIGNALS = (
    select(*_FACT_COLUMNS, _COUNTS.c.positives, _COUNTS.c.negatives)
    .outerjoin(_COUNTS, _COUNTS.c.adapter_id == _A.id)
    .where(_A.id.in_(_IDS))
)


def _facts(row: Any) -> AdapterFacts:
    words = [*(row.tags or []), *(row.user_tags or [])]
    return AdapterFacts(
        id=row.id,
        name=row.name,
        base_model=row.base_model,
        author_username=row.author_username,
        rating=row.rating,
        is_favorite=bool(row.is_favorite),
        tags=frozenset(str(word).strip().lower() for word in words if str(word).strip()),
    )


def adapter_facts(session: Session, adapter_ids: Sequence[str]) -> dict[str, AdapterFacts]:
    """Facts of these adapters (the ones that exist), by id."""
    if not adapter_ids:
        return {}
    rows = session.execute(_FACTS, {"ids": list(dict.fromkeys(adapter_ids))})
    return {row.id: _facts(row) for row in rows}


@dataclass
class Signals:
    """What the user told us about one adapter, and what it is (for preferences)."""

    adapter: AdapterFacts
    positives: int = 0
    negatives: int = 0


def signals(session: Session, adapter_ids: Sequence[str]) -> dict[str, Signals]:
    """Facts and feedback counts of these adapters, in one query."""
    if not adapter_ids:
        return {}
    rows = session.execute(_SIGNALS, {"ids": list(dict.fromkeys(adapter_ids))})
    return {
        row.id: Signals(_facts(row), int(row.positives or 0), int(row.negatives or 0))
        for row in rows
    }


_PREFERENCE_COLUMNS = (
    UserPreference.preference_type,
    UserPreference.preference_value,
    UserPreference.confidence,
    UserPreference.learned_from,
    UserPreference.updated_at,
)
_PREFERENCES = select(*_PREFERENCE_COLUMNS).order_by(
    UserPreference.preference_type, UserPreference.preference_value
)


class Preference(NamedTuple):
    preference_type: str
    preference_value: str
    confidence: float
    learned_from: str
    updated_at: datetime


def preferences(session: Session) -> list[Preference]:
    """Every preference (the columns, not ORM objects: every answer reads them)."""
    return [Preference(*row) for row in session.execute(_PREFERENCES)]


def replace_explicit_preferences(
    session: Session, wanted: Sequence[tuple[str, str, float]]
) -> None:
    """The explicit preferences become exactly `wanted` (type, value, weight)."""
    for old in session.scalars(
        select(UserPreference).where(UserPreference.learned_from == "explicit")
    ):
        session.delete(old)
    session.flush()
    now = utcnow()
    for kind, value, weight in wanted:
        session.add(
            UserPreference(
                preference_type=kind,
                preference_value=value,
                confidence=weight,
                learned_from="explicit",
                evidence_count=1,
                last_evidence_at=now,
                created_at=now,
                updated_at=now,
            )
        )


# --- sessions and feedback --------------------------------------------------------------------


def record_session(
    session: Session,
    *,
    kind: str,
    items: list[dict[str, Any]],
    prompt: str | None = None,
    active: Sequence[str] | None = None,
    target: str | None = None,
) -> str:
    """Store what was shown; the new session's id. One INSERT, no ORM bookkeeping: every
    recommendation answer pays for it."""
    session_id = new_id()
    session.execute(
        insert(_SESSIONS).values(
            id=session_id,
            recommendation_type=kind,
            context_prompt=prompt,
            active_loras=list(active) if active else None,
            target_lora_id=target,
            recommendations=items,
            generated_at=utcnow(),
        )
    )
    return session_id


def get_session(session: Session, session_id: str) -> RecommendationSession | None:
    return session.get(RecommendationSession, session_id)


def add_feedback(
    session: Session, record: RecommendationSession, adapter_id: str, kind: str, reason: str | None
) -> RecommendationFeedback:
    feedback = RecommendationFeedback(
        session_id=record.id,
        recommended_lora_id=adapter_id,
        feedback_type=kind,
        feedback_reason=reason,
        implicit_signal=kind in ("used", "dismissed"),
        created_at=utcnow(),
    )
    session.add(feedback)
    given = dict(record.user_feedback or {})
    given[adapter_id] = kind
    record.user_feedback = given
    session.flush()
    return feedback
