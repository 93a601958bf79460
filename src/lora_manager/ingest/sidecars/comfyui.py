"""ComfyUI LoRA Manager: `<stem>.metadata.json`. Its `civitai` block is a Civitai
model-version JSON; its `notes` and `usage_tips` are the user's."""

from __future__ import annotations

from typing import Any

from lora_manager.ingest.sidecars.base import Context, SidecarFormat
from lora_manager.ingest.sidecars.civitai_version import version_fields
from lora_manager.ingest.sidecars.values import (
    Fields,
    as_bool,
    as_dict,
    as_html_text,
    as_int,
    as_json_object,
    as_sha256,
    as_text,
    as_weight,
    as_words,
    overlay,
    sha256s,
)


def _user_fields(document: dict[str, Any]) -> Fields:
    tips = as_dict(as_json_object(document.get("usage_tips")))
    return {
        "preferred_weight": as_weight(tips.get("strength")),
        "notes": as_text(document.get("notes")),
    }


def _fields(document: dict[str, Any], context: Context) -> Fields:
    """Its `civitai` block first, then its own fields."""
    block = as_dict(document.get("civitai"))
    fields = (
        version_fields(block, file_name=context.file_name, file_sha256=context.file_sha256)
        if block
        else {}
    )
    size = as_int(document.get("size"))
    preview = as_text(document.get("preview_url"))
    own = {
        "name": as_text(document.get("model_name")),
        # The model's description, which ComfyUI fetches apart from the version's.
        "description": as_html_text(document.get("modelDescription")),
        "base_model": as_text(document.get("base_model")),
        "tags": as_words(document.get("tags")),
        "declared_sha256": as_sha256(document.get("sha256")),
        "primary_file_size_kb": size // 1024 if size else None,
        # Its preview_url is usually a local path; find_sidecars finds local previews.
        "preview_url": preview if preview and preview.startswith(("http://", "https://")) else None,
        "favorite_hint": as_bool(document.get("favorite")),
    }
    merged = overlay(fields, own)
    # Its own model description beats the version description of its civitai block.
    merged["description"] = own["description"] or fields.get("description")
    merged["declared_sha256"] = own["declared_sha256"] or fields.get("declared_sha256")
    return merged


def _declared(document: dict[str, Any]) -> tuple[str, ...]:
    return sha256s(document.get("sha256"))


FORMAT = SidecarFormat(
    name="comfyui",
    slot="metadata_json",
    suffix=".metadata.json",
    user_fields=_user_fields,
    civitai_fields=_fields,
    declared_sha256=_declared,
)
