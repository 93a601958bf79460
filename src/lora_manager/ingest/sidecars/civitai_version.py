"""Civitai model-version JSON, in two files:

* `<stem>.civitai.info` (Civitai Helper): `{}` means Civitai Helper looked the file up and
  Civitai had nothing;
* `<stem>.json` holding one version (`modelId` and `files`, no `modelVersions`).

The same document is ComfyUI's `civitai` block and each entry of a Civitai model JSON's
`modelVersions`, so `version_fields` serves them too.
"""

from __future__ import annotations

from typing import Any

from lora_manager.ingest.hashing import normalise_hash
from lora_manager.ingest.sidecars.base import Context, SidecarFormat
from lora_manager.ingest.sidecars.values import (
    Fields,
    as_bool,
    as_date,
    as_dict,
    as_html_text,
    as_int,
    as_kb,
    as_list,
    as_sha256,
    as_text,
    as_words,
    sha256s,
)


def version_fields(version: dict[str, Any], *, file_name: str, file_sha256: str | None) -> Fields:
    """The fields of a Civitai model-version JSON (`.civitai.info`, a `civitai` block...)."""
    model = as_dict(version.get("model"))
    chosen = pick_file(as_list(version.get("files")), file_name, file_sha256)
    hashes = as_dict(chosen.get("hashes"))
    images = [image for image in as_list(version.get("images")) if isinstance(image, dict)]
    stats = as_dict(version.get("stats")) or None
    return {
        "name": as_text(model.get("name")),
        "version_name": as_text(version.get("name")),
        "description": as_html_text(version.get("description")),
        "author": as_text(as_dict(version.get("creator")).get("username")),
        "base_model": as_text(version.get("baseModel")),
        "trained_words": as_words(version.get("trainedWords")),
        "nsfw_level": as_int(version.get("nsfwLevel")),
        "nsfw": model.get("nsfw") is True or version.get("nsfw") is True,
        "stats": stats,
        "download_count": as_int(as_dict(stats).get("downloadCount")),
        "published_at": as_date(version.get("publishedAt")) or as_date(version.get("createdAt")),
        "primary_file_name": as_text(chosen.get("name")),
        "primary_file_size_kb": as_kb(chosen.get("sizeKB")),
        "declared_sha256": as_sha256(hashes.get("SHA256")),
        "download_url": as_text(chosen.get("downloadUrl")) or as_text(version.get("downloadUrl")),
        "civitai_model_id": as_int(version.get("modelId")),
        "civitai_version_id": as_int(version.get("id")),
        "preview_url": next((url for image in images if (url := as_text(image.get("url")))), None),
        "model_type": as_text(model.get("type")),
        "supports_generation": as_bool(version.get("supportsGeneration")),
    }


def file_sha256s(version: dict[str, Any]) -> tuple[str, ...]:
    """The SHA-256 of every entry in the version's `files[]`."""
    files = as_list(version.get("files"))
    return sha256s(*(as_dict(as_dict(entry).get("hashes")).get("SHA256") for entry in files))


def pick_file(files: list[Any], file_name: str, file_sha256: str | None) -> dict[str, Any]:
    """The `files[]` entry that is this file: same hash, else same name, else the primary."""
    entries = [entry for entry in files if isinstance(entry, dict)]
    actual = normalise_hash(file_sha256)
    for entry in entries:
        if actual and as_sha256(as_dict(entry.get("hashes")).get("SHA256")) == actual:
            return entry
    for entry in entries:
        if (as_text(entry.get("name")) or "").casefold() == file_name.casefold():
            return entry
    for entry in entries:
        if entry.get("primary") is True:
            return entry
    return entries[0] if entries else {}


def _fields(document: dict[str, Any], context: Context) -> Fields:
    return version_fields(document, file_name=context.file_name, file_sha256=context.file_sha256)


def _own_id(document: dict[str, Any]) -> int | None:
    return as_int(document.get("id"))


def is_version(document: dict[str, Any]) -> bool:
    """A `<stem>.json` holding one version, not a model with its `modelVersions`."""
    return "modelId" in document and "files" in document and "modelVersions" not in document


CIVITAI_INFO = SidecarFormat(
    name="civitai_info",
    slot="civitai_info",
    suffix=".civitai.info",
    civitai_fields=_fields,
    declared_sha256=file_sha256s,
    version_id=_own_id,  # the version Civitai Helper found by the file's hash
)
VERSION_JSON = SidecarFormat(
    name="civitai_version",
    slot="json",
    suffix=".json",
    claims=is_version,
    civitai_fields=_fields,
    declared_sha256=file_sha256s,
)
