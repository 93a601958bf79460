"""Pydantic shapes of the compose API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ComposeIn(BaseModel):
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
    weights: dict[str, float] = Field(
        default_factory=dict, description="Weight overrides by adapter id"
    )
    include_triggers: bool = Field(True, description="Add each adapter's trigger words")
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
