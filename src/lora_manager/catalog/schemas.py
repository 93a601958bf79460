"""Pydantic shapes of the catalog API."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from lora_manager.core.schemas import Flag, Int4, Real, RequestModel, UtcDateTime

# A user's weight for an adapter (the composer's overrides share it).
Weight = Annotated[Real, Field(ge=-5, le=5)]
# A position in composed prompts (an INTEGER column).
Ordinal = Annotated[Int4, Field(ge=0)]


class AdapterOut(BaseModel):
    """One adapter as the catalog shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    version: str | None
    file_path: str
    file_format: str | None
    file_size: int | None
    sha256: str | None
    autov2: str | None
    tensor_sha256: str | None
    declared_sha256: str | None = Field(
        None, description="The SHA-256 a sidecar claimed, kept when it disagrees with the file"
    )
    description: str | None
    author_username: str | None
    base_model: str | None
    sd_version: str | None
    tags: list[str] | None
    user_tags: list[str] | None
    trained_words: list[str] | None
    triggers: list[str] | None
    activation_text: str | None
    preferred_weight: float | None
    nsfw_level: int
    stats: dict[str, Any] | None
    download_count: int | None
    published_at: UtcDateTime | None
    primary_file_name: str | None
    primary_file_size_kb: int | None
    primary_file_download_url: str | None
    has_preview: bool
    weight: float
    active: bool
    ordinal: int | None
    is_favorite: bool
    favorite_updated_at: UtcDateTime | None
    rating: int | None
    rating_updated_at: UtcDateTime | None
    notes: str | None
    ingest_status: str
    ingest_error: str | None
    missing_since: UtcDateTime | None
    last_ingested_at: UtcDateTime | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class AdapterDetail(AdapterOut):
    """One adapter with the raw sidecar and header data it was built from."""

    extra: dict[str, Any] | None


class AdapterPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AdapterOut]


class SortKey(StrEnum):
    name = "name"
    created = "created"
    updated = "updated"
    published = "published"
    size = "size"
    downloads = "downloads"
    rating = "rating"
    ordinal = "ordinal"


class AdapterPatch(RequestModel):
    """The fields a user owns; metadata comes from the files and their sidecars."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"weight": 0.7, "notes": "great for ink", "rating": 5}]},
    )

    active: Flag | None = None
    weight: Weight | None = None
    ordinal: Ordinal | None = None
    is_favorite: Flag | None = None
    rating: Annotated[Int4, Field(ge=1, le=5)] | None = None
    notes: str | None = Field(None, max_length=20000)
    user_tags: list[str] | None = Field(None, max_length=200)


class RatingIn(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"rating": 4}, {"rating": None}]})

    rating: Annotated[Int4, Field(ge=1, le=5)] | None = Field(
        ..., description="1 to 5, or null to clear"
    )


class FavoriteIn(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"favorite": True}]})

    favorite: Flag


class ActivateIn(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ordinal": 1, "weight": 0.8}]})

    ordinal: Ordinal | None = Field(None, description="Position in composed prompts; default last")
    weight: Weight | None = None


class BulkAction(StrEnum):
    activate = "activate"
    deactivate = "deactivate"
    favorite = "favorite"
    unfavorite = "unfavorite"
    tag = "tag"
    untag = "untag"
    delete = "delete"


class BulkIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"ids": ["0b6e…"], "action": "tag", "tags": ["ink", "style"]}]
        }
    )

    ids: list[str] = Field(..., min_length=1, max_length=1000)
    action: BulkAction
    tags: list[str] = Field(default_factory=list, description="For tag and untag")


class BulkOut(BaseModel):
    action: BulkAction
    matched: int
    changed: int
    not_found: list[str]


class RegisterIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"path": "/loras/style/ink-wash.safetensors"}]}
    )

    path: str = Field(..., description="A model file under one of the library roots")


class TagCount(BaseModel):
    tag: str
    count: int


class BaseModelCount(BaseModel):
    base_model: str
    count: int


class DuplicateGroup(BaseModel):
    sha256: str
    adapters: list[AdapterOut]
