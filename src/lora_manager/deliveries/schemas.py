"""Pydantic shapes of the compose and delivery-job API."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lora_manager.catalog.schemas import Weight
from lora_manager.core.schemas import Flag, Int4, RequestModel, UtcDateTime
from lora_manager.deliveries.backends import BACKENDS


class ComposeIn(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"prefix": "masterpiece, a cat", "negative_prompt": "blurry"},
                {"adapter_ids": ["0b6e…"], "weights": {"0b6e…": 0.6}, "include_triggers": False},
            ]
        },
    )

    adapter_ids: list[str] | None = Field(
        None, max_length=100, description="These adapters in this order; default: the active ones"
    )
    weights: dict[str, Weight] = Field(
        default_factory=dict, description="Weight overrides by adapter id (-5 to 5)"
    )
    include_triggers: Flag = Field(True, description="Add each adapter's trigger words")
    prefix: str = Field("", max_length=10_000)
    suffix: str = Field("", max_length=10_000)
    negative_prompt: str | None = Field(None, max_length=10_000)


class ComposedAdapterOut(BaseModel):
    id: str
    name: str
    token_name: str = Field(description="The file stem used in <lora:NAME:WEIGHT>")
    weight: float
    triggers: list[str] = Field(description="Trigger words this adapter added")


class SkippedOut(BaseModel):
    id: str
    reason: str


class ComposeOut(BaseModel):
    prompt: str
    negative_prompt: str | None
    adapters: list[ComposedAdapterOut]
    triggers: list[str]
    skipped: list[SkippedOut]


# --- delivery jobs ----------------------------------------------------------------------------


# The delivery modes, one a back end, in the order BACKENDS lists them.
Mode = StrEnum("Mode", {name: name for name in BACKENDS})  # type: ignore[misc]


class JobStatus(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class JobSort(StrEnum):
    created_at = "created_at"
    started_at = "started_at"
    finished_at = "finished_at"
    rating = "rating"
    status = "status"


class DeliverySpec(RequestModel):
    """Where a prompt goes: the back end and its parameters."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(description="http (webhook), cli (local command) or sdnext (txt2img)")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="http: {url, data}; cli: none; sdnext: steps, sampler_name, cfg_scale, "
        "width, height, seed, batch_size, n_iter",
    )
    max_attempts: Annotated[Int4, Field(ge=1, le=20)] | None = Field(
        None,
        description="Tries before a job that keeps failing transiently fails",
    )


class DeliveryIn(DeliverySpec):
    """A prompt to deliver: typed in full, or composed from adapters in the same call."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "mode": "sdnext",
                    "prompt": "<lora:ink-style:0.8> a cat",
                    "params": {"steps": 20, "width": 512, "height": 512},
                },
                {
                    "mode": "http",
                    "compose": {"prefix": "a cat"},
                    "params": {"url": "https://hooks.example.com/lora"},
                },
            ]
        },
    )

    prompt: str | None = Field(None, min_length=1, max_length=20_000)
    negative_prompt: str | None = Field(None, max_length=10_000)
    compose: ComposeIn | None = Field(None, description="Compose the prompt instead of typing it")

    @model_validator(mode="after")
    def _one_prompt(self) -> DeliveryIn:
        if (self.prompt is None) == (self.compose is None):
            raise ValueError("give exactly one of prompt and compose")
        if self.compose is not None and self.negative_prompt is not None:
            raise ValueError("with compose, put negative_prompt inside compose")
        return self


class ComposeAndDeliverIn(ComposeIn):
    deliver: DeliverySpec | None = Field(None, description="Also queue a delivery of the prompt")


class JobOut(BaseModel):
    id: str
    status: str = Field(description="pending, running, succeeded, failed or cancelled")
    mode: str
    prompt: str
    negative_prompt: str | None
    adapters: list[dict[str, Any]]
    params: dict[str, Any]
    result: dict[str, Any] | None
    images: list[str] = Field(description="URLs of the produced images")
    attempts: int
    max_attempts: int
    last_error: str | None
    progress: float | None
    cancel_requested: bool
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    next_attempt_at: UtcDateTime | None
    rating: int | None
    rating_updated_at: UtcDateTime | None
    is_favorite: bool
    favorite_updated_at: UtcDateTime | None


class JobPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[JobOut]


class ComposeAndDeliverOut(ComposeOut):
    job: JobOut | None = None


class JobRatingIn(RequestModel):
    model_config = ConfigDict(extra="forbid")
    rating: Annotated[Int4, Field(ge=1, le=5)] | None = Field(
        ..., description="1 to 5, or null to clear"
    )


class JobFavoriteIn(RequestModel):
    model_config = ConfigDict(extra="forbid")
    favorite: Flag
