"""Pydantic shapes of the recommendations API."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from lora_manager.core.schemas import Flag, Int4, Real, RequestModel, UtcDateTime


class SuggestionOut(BaseModel):
    adapter_id: str
    name: str
    base_model: str | None
    similarity: float = Field(
        description="Cosine similarity of the embeddings; for by-trigger, how well the trigger "
        "word matches (1 exact, 0.95 typed another way, at most 0.9 a near spelling)"
    )
    score: float = Field(description="Similarity plus the boosts (ratings, feedback, …)")
    reasons: list[str]


class RecommendationsOut(BaseModel):
    session_id: str = Field(description="Give it with feedback on these suggestions")
    items: list[SuggestionOut]
    hint: str | None = Field(None, description="Why the list is empty, and what to do")


class ForPromptIn(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "a samurai in the rain, ink wash"}]},
    )

    prompt: str = Field(min_length=1, max_length=10_000)
    active_adapter_ids: list[str] | None = Field(
        None, max_length=100, description="Adapters already in use; default: the active ones"
    )
    limit: Annotated[Int4, Field(ge=1, le=100)] = 10
    base_model: str | None = Field(None, max_length=200, description="Only this base model")


class FeedbackKind(StrEnum):
    positive = "positive"
    negative = "negative"
    used = "used"
    dismissed = "dismissed"


class FeedbackIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str
    adapter_id: str
    feedback: FeedbackKind
    reason: str | None = Field(None, max_length=1_000)


class PreferenceKind(StrEnum):
    tag = "tag"
    base_model = "base_model"
    author = "author"


class PreferenceIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    type: PreferenceKind
    value: str = Field(min_length=1, max_length=200)
    weight: Annotated[Real, Field(ge=-1, le=1)] = Field(1.0, description="-1 (avoid) to 1 (prefer)")


class PreferencesIn(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "preferences": [
                        {"type": "tag", "value": "ink", "weight": 1},
                        {"type": "base_model", "value": "SD 1.5", "weight": -0.5},
                    ]
                }
            ]
        },
    )

    preferences: list[PreferenceIn] = Field(max_length=500)


class PreferenceOut(BaseModel):
    type: str
    value: str
    weight: float
    learned_from: str
    updated_at: UtcDateTime


class RecomputeIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    adapter_ids: list[str] | None = Field(
        None, max_length=10_000, description="Only these adapters; default: all"
    )
    force: Flag = Field(False, description="Recompute even vectors that are up to date")


class EmbeddingRunOut(BaseModel):
    id: str
    status: str
    model: str
    adapter_ids: list[str] | None
    force: bool
    total: int | None
    done: int
    error: str | None
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None


class StatsOut(BaseModel):
    adapters: int
    embedded: int = Field(description="Adapters with a vector of the current model")
    coverage: float
    other_model: int = Field(description="Vectors of another model, waiting for a recompute")
    model: str
    dim: int
    embedder: str
    index_size: int
    index_loaded_at: UtcDateTime | None
