"""Sidecar files beside a model: find them, read them, and merge them with the header.

Sidecars, by the tool that writes them (docs/FORMATS.md has their fields):

* `<stem>.civitai.info`   Civitai model-version JSON (Civitai Helper); `{}` = Civitai had nothing
* `<stem>.json`           with `modelVersions`: a Civitai model JSON; with `modelId` and `files`:
                          a Civitai model-version JSON; otherwise AUTOMATIC1111 user metadata
* `<stem>.metadata.json`  ComfyUI LoRA Manager (its `civitai` block is a model-version JSON)
* `<stem>.cm-info.json`   Stability Matrix
* `<stem>.preview.{png,jpg,jpeg,webp,mp4}`, else `<stem>.{png,jpg,jpeg,webp}`: the preview

PRECEDENCE, the project's one rule for merging them:

1. The user's own edits win: AUTOMATIC1111 `<stem>.json` (description, "activation text",
   "preferred weight", "sd version", "negative text", notes), ComfyUI `notes` and
   `usage_tips`, Stability Matrix `UserTitle`. The A1111 keys also count as user edits when
   they sit inside a Civitai model JSON (the A1111 editor saves its keys into whatever
   `<stem>.json` holds), except `description`, which there is Civitai's.
2. Then Civitai data, in this order: `.civitai.info`; a model-version `<stem>.json`; the
   Civitai model JSON with its matching `modelVersions` entry (the one listing the file's
   SHA-256 as computed, else as another sidecar claims it, else the one with the
   `.civitai.info` version id, else the first); the ComfyUI
   `.metadata.json` `civitai` block, then its own fields; Stability Matrix `.cm-info.json`.
3. Then the safetensors header.

Field by field, the first source with a non-empty value wins: None, empty or blank strings,
empty lists and `{}` never replace anything. Lists (tags, trained words, triggers) are the
union in that order, de-duplicated case-insensitively, first spelling kept. Exceptions, each
stated where it is computed: the name is empty when no source has one (a new adapter is
named after its file by the importer, an existing one keeps its name); `base_model` takes the
A1111 "sd version" only after the header (it is a coarse category, not a model);
`activation_text` falls back to the joined trained words; `nsfw_level` is at least 1 when any
source says `nsfw: true`. Nothing here raises on bad content: a sidecar that cannot be read is
reported in `SidecarData.errors` and merged as absent.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lora_manager.ingest.hashing import normalise_hash
from lora_manager.ingest.safetensors import (
    HeaderInfo,
    human_size,
    parse_datetime,
    split_list,
    unique_words,
)

MAX_SIDECAR_BYTES = 32 * 1024 * 1024
CIVITAI_INFO_SUFFIX = ".civitai.info"
JSON_SUFFIX = ".json"
METADATA_JSON_SUFFIX = ".metadata.json"
CM_INFO_SUFFIX = ".cm-info.json"
# In order of preference: the tools' own `.preview.*` names first, then a bare image.
PREVIEW_SUFFIXES: tuple[str, ...] = (
    ".preview.png",
    ".preview.jpg",
    ".preview.jpeg",
    ".preview.webp",
    ".preview.mp4",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
)
# AUTOMATIC1111's card editor keys; "description" is left out on purpose (see the docstring).
A1111_EDIT_KEYS: tuple[str, ...] = (
    "activation text",
    "preferred weight",
    "sd version",
    "negative text",
    "notes",
)
_SD_VERSION_LABELS = {"sd1": "SD 1.5", "sd2": "SD 2", "sdxl": "SDXL 1.0", "sd3": "SD 3"}
# (prefix of a base-model label, A1111 "sd version"); SDXL fine-tunes load as SDXL.
_BASE_MODEL_SD_VERSIONS: tuple[tuple[str, str], ...] = (
    ("sd 1", "SD1"),
    ("sd 2", "SD2"),
    ("sdxl", "SDXL"),
    ("pony", "SDXL"),
    ("illustrious", "SDXL"),
    ("noobai", "SDXL"),
    ("sd 3", "SD3"),
)
_HEX64 = re.compile(r"[0-9a-f]{64}")


# --- discovery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SidecarFiles:
    """The sidecar files that exist beside one model (None where there is none)."""

    model_path: Path
    civitai_info: Path | None = None
    json: Path | None = None
    metadata_json: Path | None = None
    cm_info: Path | None = None
    preview: Path | None = None

    def paths(self) -> list[Path]:
        """Every existing sidecar, preview included: the files whose changes mean a re-read."""
        candidates = (self.civitai_info, self.json, self.metadata_json, self.cm_info)
        return [path for path in (*candidates, self.preview) if path is not None]


def find_sidecars(model_path: Path, siblings: Container[str] | None = None) -> SidecarFiles:
    """The sidecars of the model at `model_path`, matched by exact file name.

    `siblings` holds the names in the model's directory (a set, or a dict keyed by name, from
    one `os.scandir` by the caller); given it, discovery makes no system call at all. Without
    it, one `lexists` per candidate name. A name that exists but cannot be read (a directory,
    a dangling symlink) is still returned, so `read_sidecars` reports it instead of hiding it.
    """
    directory, stem = model_path.parent, model_path.stem

    def existing(suffix: str) -> Path | None:
        name = stem + suffix
        found = name in siblings if siblings is not None else os.path.lexists(directory / name)
        return directory / name if found else None

    preview = None
    for suffix in PREVIEW_SUFFIXES:
        if (preview := existing(suffix)) is not None:
            break
    return SidecarFiles(
        model_path=model_path,
        civitai_info=existing(CIVITAI_INFO_SUFFIX),
        json=existing(JSON_SUFFIX),
        metadata_json=existing(METADATA_JSON_SUFFIX),
        cm_info=existing(CM_INFO_SUFFIX),
        preview=preview,
    )


# --- reading -----------------------------------------------------------------------------


class SidecarError(ValueError):
    """A sidecar that cannot be used; the message is the precise reason."""


@dataclass
class SidecarData:
    """The parsed JSON of each sidecar (raw dicts, None when absent or unreadable).

    `civitai_info == {}` means Civitai Helper looked the file up and Civitai had nothing.
    `errors` maps a sidecar's file name to the reason it was not used.
    """

    civitai_info: dict[str, Any] | None = None
    civitai_version: dict[str, Any] | None = None
    civitai_model: dict[str, Any] | None = None
    a1111: dict[str, Any] | None = None
    comfyui: dict[str, Any] | None = None
    stability_matrix: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def load_sidecar_json(path: Path) -> dict[str, Any]:
    """The JSON object in the sidecar at `path`; raises `SidecarError` with the reason."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_SIDECAR_BYTES:
                raise SidecarError(
                    f"too large ({human_size(size)}; the limit is {human_size(MAX_SIDECAR_BYTES)})"
                )
            raw = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise SidecarError(f"unreadable: {exc.strerror or exc}") from None
    if not raw:
        raise SidecarError("empty file (0 bytes)")
    try:
        # utf-8-sig: editors on Windows prepend a byte-order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SidecarError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise SidecarError(
                f"truncated JSON (the text ends inside a value, line {exc.lineno} "
                f"column {exc.colno})"
            ) from None
        raise SidecarError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise SidecarError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer beyond Python's digit limit
        raise SidecarError(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        kind = "a list" if isinstance(document, list) else type(document).__name__
        raise SidecarError(f"not a JSON object (found {kind})")
    return document


def read_sidecars(files: SidecarFiles) -> SidecarData:
    """Parse every sidecar in `files`; a bad one is reported in `errors`, never raised."""
    data = SidecarData()

    def load(path: Path | None) -> dict[str, Any] | None:
        if path is None:
            return None
        try:
            return load_sidecar_json(path)
        except SidecarError as exc:
            data.errors[path.name] = str(exc)
            return None

    data.civitai_info = load(files.civitai_info)
    plain_json = load(files.json)
    if plain_json is not None:
        if "modelVersions" in plain_json:
            data.civitai_model = plain_json
        elif "modelId" in plain_json and "files" in plain_json:
            data.civitai_version = plain_json
        else:
            data.a1111 = plain_json
    data.comfyui = load(files.metadata_json)
    data.stability_matrix = load(files.cm_info)
    return data


# --- merging -----------------------------------------------------------------------------


@dataclass
class AdapterMetadata:
    """One model's merged metadata.

    `extra` keeps the raw data of every source that was read, so nothing is lost: keys
    "civitai_info", "civitai_version", "civitai_model", "a1111", "comfyui",
    "stability_matrix" and "safetensors" (the header's metadata strings).
    """

    name: str
    version_name: str | None = None
    description: str | None = None
    author: str | None = None
    base_model: str | None = None
    sd_version: str | None = None
    tags: list[str] = field(default_factory=list)
    trained_words: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    activation_text: str | None = None
    preferred_weight: float | None = None
    negative_text: str | None = None
    notes: str | None = None
    nsfw_level: int | None = None
    stats: dict[str, Any] | None = None
    download_count: int | None = None
    published_at: datetime | None = None
    primary_file_name: str | None = None
    primary_file_size_kb: int | None = None
    declared_sha256: str | None = None
    download_url: str | None = None
    civitai_model_id: int | None = None
    civitai_version_id: int | None = None
    preview_url: str | None = None
    favorite_hint: bool | None = None
    model_type: str | None = None
    supports_generation: bool | None = None
    tensor_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def merge_metadata(
    header: HeaderInfo | None,
    sidecars: SidecarData,
    *,
    file_name: str,
    file_sha256: str | None = None,
) -> AdapterMetadata:
    """Merge the header and the sidecars of one model by the module's precedence rule.

    `file_name` is the model's own name (the name's last resort, and the file entry to pick
    in Civitai's `files[]`); `file_sha256`, when the caller has hashed the file, picks the
    matching model version and file entry.
    """
    user = _user_edits(sidecars)
    declared = _declared_hashes(sidecars)
    info_version_id = _int(_dict(sidecars.civitai_info).get("id"))
    civitai = [
        _from_version(doc, file_name=file_name, file_sha256=file_sha256)
        for doc in (sidecars.civitai_info, sidecars.civitai_version)
        if doc
    ]
    if sidecars.civitai_model:
        civitai.append(
            _from_model(
                sidecars.civitai_model,
                file_name=file_name,
                hashes=[file_sha256, *declared],
                version_id=info_version_id,
                file_sha256=file_sha256,
            )
        )
    if sidecars.comfyui:
        civitai.append(_from_comfyui(sidecars.comfyui, file_name, file_sha256))
    if sidecars.stability_matrix:
        civitai.append(_from_stability_matrix(sidecars.stability_matrix))
    head = _from_header(header)
    sources = [user, *civitai, head]

    def first(key: str) -> Any:
        return next((source[key] for source in sources if _present(source.get(key))), None)

    def union(key: str, among: Iterable[dict[str, Any]]) -> list[str]:
        return unique_words(word for source in among for word in source.get(key, []))

    trained_words = union("trained_words", civitai)
    header_triggers = head.get("triggers", [])
    activation = user.get("activation_text") or ", ".join(trained_words or header_triggers)
    base_model = first("base_model") or _SD_VERSION_LABELS.get(
        (user.get("sd_version") or "").casefold()
    )
    return AdapterMetadata(
        name=first("name") or "",  # the importer names a new adapter after its file
        version_name=first("version_name"),
        description=first("description"),
        author=first("author"),
        base_model=base_model,
        sd_version=user.get("sd_version") or _sd_version_of(base_model),
        tags=union("tags", sources),
        trained_words=trained_words,
        triggers=unique_words(
            [*split_list(user.get("activation_text")), *trained_words, *header_triggers]
        ),
        activation_text=activation or None,
        preferred_weight=first("preferred_weight"),
        negative_text=first("negative_text"),
        notes=first("notes"),
        nsfw_level=_nsfw_level(sources),
        stats=first("stats"),
        download_count=first("download_count"),
        published_at=first("published_at"),
        primary_file_name=first("primary_file_name") or file_name,
        primary_file_size_kb=first("primary_file_size_kb"),
        declared_sha256=first("declared_sha256"),
        download_url=first("download_url"),
        civitai_model_id=first("civitai_model_id"),
        civitai_version_id=first("civitai_version_id"),
        preview_url=first("preview_url"),
        favorite_hint=first("favorite_hint"),
        model_type=first("model_type"),
        supports_generation=first("supports_generation"),
        tensor_sha256=head.get("tensor_sha256"),
        extra=_extra(header, sidecars),
    )


def _user_edits(sidecars: SidecarData) -> dict[str, Any]:
    a1111 = _dict(sidecars.a1111)
    embedded = _dict(sidecars.civitai_model)
    edits = {key: a1111[key] if key in a1111 else embedded.get(key) for key in A1111_EDIT_KEYS}
    comfyui = _dict(sidecars.comfyui)
    tips = _dict(_json_object(comfyui.get("usage_tips")))
    sd_version = _text(edits["sd version"])
    return {
        "name": _text(_dict(sidecars.stability_matrix).get("UserTitle")),
        "description": _text(a1111.get("description")),
        "activation_text": _text(edits["activation text"]),
        "preferred_weight": _weight(edits["preferred weight"]) or _weight(tips.get("strength")),
        "sd_version": None if (sd_version or "").casefold() == "unknown" else sd_version,
        "negative_text": _text(edits["negative text"]),
        "notes": _text(edits["notes"]) or _text(comfyui.get("notes")),
    }


def _from_version(
    version: dict[str, Any], *, file_name: str, file_sha256: str | None
) -> dict[str, Any]:
    """The fields of a Civitai model-version JSON (`.civitai.info`, a `civitai` block...)."""
    model = _dict(version.get("model"))
    chosen = _pick_file(_list(version.get("files")), file_name, file_sha256)
    hashes = _dict(chosen.get("hashes"))
    images = [image for image in _list(version.get("images")) if isinstance(image, dict)]
    stats = _dict(version.get("stats")) or None
    return {
        "name": _text(model.get("name")),
        "version_name": _text(version.get("name")),
        "description": _html_text(version.get("description")),
        "author": _text(_dict(version.get("creator")).get("username")),
        "base_model": _text(version.get("baseModel")),
        "trained_words": _words(version.get("trainedWords")),
        "nsfw_level": _int(version.get("nsfwLevel")),
        "nsfw": model.get("nsfw") is True or version.get("nsfw") is True,
        "stats": stats,
        "download_count": _int(_dict(stats).get("downloadCount")),
        "published_at": _date(version.get("publishedAt")) or _date(version.get("createdAt")),
        "primary_file_name": _text(chosen.get("name")),
        "primary_file_size_kb": _kb(chosen.get("sizeKB")),
        "declared_sha256": _sha256(hashes.get("SHA256")),
        "download_url": _text(chosen.get("downloadUrl")) or _text(version.get("downloadUrl")),
        "civitai_model_id": _int(version.get("modelId")),
        "civitai_version_id": _int(version.get("id")),
        "preview_url": next((url for image in images if (url := _text(image.get("url")))), None),
        "model_type": _text(model.get("type")),
        "supports_generation": _bool(version.get("supportsGeneration")),
    }


def _from_model(
    model: dict[str, Any],
    *,
    file_name: str,
    hashes: list[str | None],
    version_id: int | None,
    file_sha256: str | None,
) -> dict[str, Any]:
    """A Civitai model JSON: the model's own fields first, then its matching version's."""
    version = _pick_version(_list(model.get("modelVersions")), hashes, version_id)
    fields = _from_version(version, file_name=file_name, file_sha256=file_sha256)
    inner = _dict(model.get("model"))
    stats = _dict(model.get("stats")) or None
    own = {
        # `model.name` first: in flattened files the top-level name may be the version's.
        "name": _text(inner.get("name")) or _text(model.get("name")),
        "description": _html_text(model.get("description")),
        "author": _text(_dict(model.get("creator")).get("username")),
        "tags": _words(model.get("tags")),
        "nsfw_level": _int(model.get("nsfwLevel")),
        "nsfw": model.get("nsfw") is True or inner.get("nsfw") is True,
        "stats": stats,
        "download_count": _int(_dict(stats).get("downloadCount")),
        # A flattened file's top-level id may be the version's; its version has modelId.
        "civitai_model_id": _int(model.get("id")) if "model" not in model else None,
        "model_type": _text(model.get("type")) or _text(inner.get("type")),
        "supports_generation": _bool(model.get("supportsGeneration")),
    }
    merged = _overlay(own, fields)
    # The version's level is this file's; the model's covers all its versions.
    merged["nsfw_level"] = fields.get("nsfw_level") or own["nsfw_level"]
    return merged


def _from_comfyui(doc: dict[str, Any], file_name: str, file_sha256: str | None) -> dict[str, Any]:
    """ComfyUI LoRA Manager: its `civitai` block first, then its own fields."""
    block = _dict(doc.get("civitai"))
    fields = _from_version(block, file_name=file_name, file_sha256=file_sha256) if block else {}
    size = _int(doc.get("size"))
    preview = _text(doc.get("preview_url"))
    own = {
        "name": _text(doc.get("model_name")),
        # The model's description, which ComfyUI fetches apart from the version's.
        "description": _html_text(doc.get("modelDescription")),
        "base_model": _text(doc.get("base_model")),
        "tags": _words(doc.get("tags")),
        "declared_sha256": _sha256(doc.get("sha256")),
        "primary_file_size_kb": size // 1024 if size else None,
        # Its preview_url is usually a local path; find_sidecars finds local previews.
        "preview_url": preview if preview and preview.startswith(("http://", "https://")) else None,
        "favorite_hint": _bool(doc.get("favorite")),
    }
    merged = _overlay(fields, own)
    # Its own model description beats the version description of its civitai block.
    merged["description"] = own["description"] or fields.get("description")
    merged["declared_sha256"] = own["declared_sha256"] or fields.get("declared_sha256")
    return merged


def _from_stability_matrix(doc: dict[str, Any]) -> dict[str, Any]:
    hashes = _dict(doc.get("Hashes"))
    stats = _dict(doc.get("Stats")) or None
    return {
        "name": _text(doc.get("ModelName")),
        "version_name": _text(doc.get("VersionName")),
        "description": _html_text(doc.get("ModelDescription"))
        or _html_text(doc.get("VersionDescription")),
        "author": _text(doc.get("AuthorUsername")),
        "base_model": _text(doc.get("BaseModel")),
        "tags": _words(doc.get("Tags")),
        "trained_words": _words(doc.get("TrainedWords")),
        "nsfw": doc.get("Nsfw") is True,
        "stats": stats,
        "download_count": _int(_dict(stats).get("downloadCount")),
        "declared_sha256": _sha256(hashes.get("SHA256")),
        "civitai_model_id": _int(doc.get("ModelId")),
        "civitai_version_id": _int(doc.get("VersionId")),
        "preview_url": _text(doc.get("ThumbnailImageUrl")),
        "model_type": _text(doc.get("ModelType")),
    }


def _from_header(header: HeaderInfo | None) -> dict[str, Any]:
    if header is None:
        return {}
    return {
        "name": header.title,
        "description": header.description,
        "author": header.author,
        "base_model": header.base_model,
        "tags": header.tags,
        "triggers": header.trigger_words,
        "published_at": header.published_at,
        "tensor_sha256": header.tensor_sha256,
    }


def _extra(header: HeaderInfo | None, sidecars: SidecarData) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "civitai_info": sidecars.civitai_info,
        "civitai_version": sidecars.civitai_version,
        "civitai_model": sidecars.civitai_model,
        "a1111": sidecars.a1111,
        "comfyui": sidecars.comfyui,
        "stability_matrix": sidecars.stability_matrix,
        "safetensors": header.raw if header is not None else None,
    }
    return {key: value for key, value in raw.items() if value is not None}


def _declared_hashes(sidecars: SidecarData) -> list[str | None]:
    """SHA-256 values the non-model-JSON sidecars claim, to find the model JSON's version."""
    claims: list[str | None] = []
    for version in (sidecars.civitai_info, sidecars.civitai_version):
        for entry in _list(_dict(version).get("files")):
            claims.append(_sha256(_dict(_dict(entry).get("hashes")).get("SHA256")))
    comfyui = _dict(sidecars.comfyui)
    claims.append(_sha256(comfyui.get("sha256")))
    claims.append(_sha256(_dict(_dict(sidecars.stability_matrix).get("Hashes")).get("SHA256")))
    return [claim for claim in claims if claim]


def _pick_version(
    versions: list[Any], hashes: list[str | None], version_id: int | None
) -> dict[str, Any]:
    """The version listing one of `hashes` (earlier hashes first: the computed one leads),
    else the one with `version_id`, else the first."""
    candidates = [version for version in versions if isinstance(version, dict)]
    listed = [
        (version, _sha256(_dict(_dict(entry).get("hashes")).get("SHA256")))
        for version in candidates
        for entry in _list(version.get("files"))
    ]
    for wanted in (normalise_hash(value) for value in hashes if value):
        for version, sha in listed:
            if sha == wanted:
                return version
    for version in candidates:
        if version_id is not None and _int(version.get("id")) == version_id:
            return version
    return candidates[0] if candidates else {}


def _pick_file(files: list[Any], file_name: str, file_sha256: str | None) -> dict[str, Any]:
    """The `files[]` entry that is this file: same hash, else same name, else the primary."""
    entries = [entry for entry in files if isinstance(entry, dict)]
    actual = normalise_hash(file_sha256)
    for entry in entries:
        if actual and _sha256(_dict(entry.get("hashes")).get("SHA256")) == actual:
            return entry
    for entry in entries:
        if (_text(entry.get("name")) or "").casefold() == file_name.casefold():
            return entry
    for entry in entries:
        if entry.get("primary") is True:
            return entry
    return entries[0] if entries else {}


def _nsfw_level(sources: list[dict[str, Any]]) -> int | None:
    """The first positive `nsfwLevel`; 0 (unrated) only when nothing else says more."""
    levels = [source.get("nsfw_level") for source in sources]
    level = next((value for value in levels if value and value > 0), None)
    if level is None and 0 in levels:
        level = 0
    if any(source.get("nsfw") is True for source in sources):
        level = max(level or 0, 1)
    return level


def _sd_version_of(base_model: str | None) -> str | None:
    label = (base_model or "").casefold()
    return next((sd for prefix, sd in _BASE_MODEL_SD_VERSIONS if label.startswith(prefix)), None)


def _overlay(primary: dict[str, Any], secondary: dict[str, Any]) -> dict[str, Any]:
    """`primary`'s present values, `secondary`'s where `primary` has none; lists united."""
    merged = dict(secondary)
    for key, value in primary.items():
        if isinstance(value, list):
            merged[key] = unique_words([*value, *secondary.get(key, [])])
        elif key == "nsfw":
            merged[key] = value or secondary.get(key) is True
        elif _present(value) or key not in merged:
            merged[key] = value
    return merged


# --- tolerant value readers --------------------------------------------------------------


def html_to_text(text: str) -> str:
    """Civitai's HTML description as plain text: tags stripped, entities decoded, line and
    paragraph breaks kept."""
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", "", text)
    text = re.sub(r"(?i)<\s*li\b[^>]*>", "\n- ", text)
    text = re.sub(r"(?i)<\s*br\s*/?\s*>", "\n", text)
    text = re.sub(r"(?i)</\s*tr\s*>", "\n", text)
    text = re.sub(r"(?i)</\s*(p|div|h[1-6]|ul|ol|table|blockquote|pre)\s*>", "\n\n", text)
    text = re.sub(r"<[^>]*>", "", text)
    text = html.unescape(text).replace("\xa0", " ")
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _html_text(value: Any) -> str | None:
    text = _text(value)
    return (html_to_text(text) or None) if text else None


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list | dict | tuple | set):
        return bool(value)
    return True


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _weight(value: Any) -> float | None:
    """A preferred weight: 0 (A1111's "unset") and garbage are None."""
    number = _float(value)
    return number if number else None


def _kb(value: Any) -> int | None:
    number = _float(value)
    return round(number) if number is not None and number >= 0 else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _date(value: Any) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


def _sha256(value: Any) -> str | None:
    text = normalise_hash(value) if isinstance(value, str) else ""
    return text if _HEX64.fullmatch(text) else None


def _words(value: Any) -> list[str]:
    """Strings of a list (or a comma-separated string); `{"name": ...}` items as their name."""
    if isinstance(value, str):
        return split_list(value)
    words: list[str] = []
    for item in _list(value):
        word = _text(item.get("name")) if isinstance(item, dict) else _text(item)
        if word:
            words.append(word)
    return unique_words(words)


def _json_object(value: Any) -> Any:
    """`value` itself if already parsed, else its JSON text parsed; None if it is not JSON."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None
