"""Pydantic shapes of the catalog API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class AdapterOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    version: str | None
    tags: list[str] | None
    file_path: str
    weight: float
    active: bool
    ordinal: int | None
    description: str | None
    sd_version: str | None
    nsfw_level: int
    created_at: datetime
    updated_at: datetime


class AdapterPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AdapterOut]
