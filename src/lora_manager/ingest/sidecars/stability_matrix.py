"""Stability Matrix: `<stem>.cm-info.json`, its own flattening of Civitai's data; its
`UserTitle` is the user's."""

from __future__ import annotations

from typing import Any

from lora_manager.ingest.sidecars.base import Context, SidecarFormat
from lora_manager.ingest.sidecars.values import (
    Fields,
    as_dict,
    as_html_text,
    as_int,
    as_sha256,
    as_text,
    as_words,
    sha256s,
)


def _user_fields(document: dict[str, Any]) -> Fields:
    return {"name": as_text(document.get("UserTitle"))}


def _fields(document: dict[str, Any], context: Context) -> Fields:
    stats = as_dict(document.get("Stats")) or None
    return {
        "name": as_text(document.get("ModelName")),
        "version_name": as_text(document.get("VersionName")),
        "description": as_html_text(document.get("ModelDescription"))
        or as_html_text(document.get("VersionDescription")),
        "author": as_text(document.get("AuthorUsername")),
        "base_model": as_text(document.get("BaseModel")),
        "tags": as_words(document.get("Tags")),
        "trained_words": as_words(document.get("TrainedWords")),
        "nsfw": document.get("Nsfw") is True,
        "stats": stats,
        "download_count": as_int(as_dict(stats).get("downloadCount")),
        "declared_sha256": as_sha256(as_dict(document.get("Hashes")).get("SHA256")),
        "civitai_model_id": as_int(document.get("ModelId")),
        "civitai_version_id": as_int(document.get("VersionId")),
        "preview_url": as_text(document.get("ThumbnailImageUrl")),
        "model_type": as_text(document.get("ModelType")),
    }


def _declared(document: dict[str, Any]) -> tuple[str, ...]:
    return sha256s(as_dict(document.get("Hashes")).get("SHA256"))


FORMAT = SidecarFormat(
    name="stability_matrix",
    slot="cm_info",
    suffix=".cm-info.json",
    user_fields=_user_fields,
    civitai_fields=_fields,
    declared_sha256=_declared,
)
