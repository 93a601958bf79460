"""Pydantic shapes of the imports API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lora_manager.core.schemas import Flag, RequestModel, UtcDateTime


class ImportIn(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"paths": ["/loras/sdxl"], "dry_run": False}, {}]},
    )

    paths: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Folders under the library roots; empty means every root (LORA_ROOTS)",
    )
    dry_run: Flag = Field(False, description="Report what would change; change nothing")


ImportStatus = Literal["pending", "running", "succeeded", "failed", "interrupted"]


class ImportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: ImportStatus = Field(
        description="pending, running, succeeded, failed, or interrupted: the process running "
        "it died (`error` says when it was last seen)"
    )
    roots: list[str]
    dry_run: bool
    progress: dict[str, Any] | None = Field(
        None, description="files_total, files_done, bytes_total, bytes_hashed"
    )
    summary: dict[str, Any] | None = Field(
        None, description="new, updated, unchanged, moved, missing, failed, failures, …"
    )
    error: str | None
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
