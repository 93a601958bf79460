"""Civitai model JSON: a `<stem>.json` with the model and its `modelVersions`.

The AUTOMATIC1111 card editor saves its keys into whatever `<stem>.json` holds, so this file
may carry the user's edits too (all but `description`, which here is Civitai's).
"""

from __future__ import annotations

from typing import Any

from lora_manager.ingest.hashing import normalise_hash
from lora_manager.ingest.sidecars import a1111
from lora_manager.ingest.sidecars.base import Context, SidecarFormat
from lora_manager.ingest.sidecars.civitai_version import file_sha256s, version_fields
from lora_manager.ingest.sidecars.values import (
    Fields,
    as_bool,
    as_dict,
    as_html_text,
    as_int,
    as_list,
    as_text,
    as_words,
    overlay,
)


def _fields(model: dict[str, Any], context: Context) -> Fields:
    """The model's own fields first, then its matching version's."""
    hashes = [context.file_sha256, *context.declared]
    version = pick_version(as_list(model.get("modelVersions")), hashes, context.version_id)
    fields = version_fields(version, file_name=context.file_name, file_sha256=context.file_sha256)
    inner = as_dict(model.get("model"))
    stats = as_dict(model.get("stats")) or None
    own = {
        # `model.name` first: in flattened files the top-level name may be the version's.
        "name": as_text(inner.get("name")) or as_text(model.get("name")),
        "description": as_html_text(model.get("description")),
        "author": as_text(as_dict(model.get("creator")).get("username")),
        "tags": as_words(model.get("tags")),
        "nsfw_level": as_int(model.get("nsfwLevel")),
        "nsfw": model.get("nsfw") is True or inner.get("nsfw") is True,
        "stats": stats,
        "download_count": as_int(as_dict(stats).get("downloadCount")),
        # A flattened file's top-level id may be the version's; its version has modelId.
        "civitai_model_id": as_int(model.get("id")) if "model" not in model else None,
        "model_type": as_text(model.get("type")) or as_text(inner.get("type")),
        "supports_generation": as_bool(model.get("supportsGeneration")),
    }
    merged = overlay(own, fields)
    # The version's level is this file's; the model's covers all its versions.
    merged["nsfw_level"] = fields.get("nsfw_level") or own["nsfw_level"]
    return merged


def pick_version(
    versions: list[Any], hashes: list[str | None], version_id: int | None
) -> dict[str, Any]:
    """The version listing one of `hashes` (earlier hashes first: the computed one leads),
    else the one with `version_id`, else the first."""
    candidates = [version for version in versions if isinstance(version, dict)]
    listed = [(version, sha) for version in candidates for sha in file_sha256s(version)]
    for wanted in (normalise_hash(value) for value in hashes if value):
        for version, sha in listed:
            if sha == wanted:
                return version
    for version in candidates:
        if version_id is not None and as_int(version.get("id")) == version_id:
            return version
    return candidates[0] if candidates else {}


def is_model(document: dict[str, Any]) -> bool:
    return "modelVersions" in document


FORMAT = SidecarFormat(
    name="civitai_model",
    slot="json",
    suffix=".json",
    claims=is_model,
    user_fields=a1111.edits,
    civitai_fields=_fields,
)
