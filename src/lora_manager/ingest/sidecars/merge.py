"""The merge of a model's header and sidecars: the project's one precedence rule.

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

Within a tier the sources come in the registry's order (`sidecars/__init__.py`); each format
module maps its document to the fields of its tiers (`SidecarFormat.user_fields` and
`civitai_fields`), and this module alone decides between them.

Field by field, the first source with a non-empty value wins: None, empty or blank strings,
empty lists and `{}` never replace anything. Lists (tags, trained words, triggers) are the
union in that order, de-duplicated case-insensitively, first spelling kept. Exceptions, each
stated where it is computed: the name is empty when no source has one (a new adapter is
named after its file by the importer, an existing one keeps its name); `base_model` takes the
A1111 "sd version" only after the header (it is a coarse category, not a model);
`activation_text` falls back to the joined trained words; `nsfw_level` is at least 1 when any
source says `nsfw: true`. The name of the source each single value came from is recorded in
`AdapterMetadata.provenance`, and the raw data of every source read in `extra`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lora_manager.ingest.safetensors import HeaderInfo, split_list, unique_words
from lora_manager.ingest.sidecars.base import Context, SidecarFormat
from lora_manager.ingest.sidecars.values import Fields, present

HEADER = "safetensors"  # the header's source name, and its key in `extra`
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


@dataclass
class AdapterMetadata:
    """One model's merged metadata.

    `extra` keeps the raw data of every source that was read, so nothing is lost: one key per
    sidecar format (its name: "civitai_info", "civitai_version", "civitai_model", "a1111",
    "comfyui", "stability_matrix") and "safetensors" (the header's metadata strings).
    `provenance` maps each field taken whole from one source to that source's name (a value
    derived from others, like `activation_text` made of trained words, is not listed).
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
    provenance: dict[str, str] = field(default_factory=dict)


class _Sources:
    """Named field sets in precedence order; remembers where each value came from."""

    def __init__(self, sources: list[tuple[str, Fields]]) -> None:
        self.sources = sources
        self.provenance: dict[str, str] = {}

    def first(self, key: str) -> Any:
        """The first present value of `key`; its source's name is recorded."""
        for name, fields in self.sources:
            if present(value := fields.get(key)):
                self.provenance[key] = name
                return value
        return None

    def union(self, key: str) -> list[str]:
        return unique_words(word for _, fields in self.sources for word in fields.get(key, []))

    def values(self, key: str) -> list[Any]:
        return [fields.get(key) for _, fields in self.sources]


def merge(
    header: HeaderInfo | None,
    documents: Sequence[tuple[SidecarFormat, dict[str, Any]]],
    *,
    file_name: str,
    file_sha256: str | None = None,
) -> AdapterMetadata:
    """Merge the header and the sidecar `documents` (in the registry's order) of one model.

    `file_name` is the model's own name (the name's last resort, and the file entry to pick
    in Civitai's `files[]`); `file_sha256`, when the caller has hashed the file, picks the
    matching model version and file entry.
    """
    context = Context(
        file_name=file_name,
        file_sha256=file_sha256,
        declared=tuple(sha for fmt, doc in documents for sha in fmt.declared_sha256(doc)),
        version_id=next(
            (found for fmt, doc in documents if (found := fmt.version_id(doc)) is not None),
            None,
        ),
    )
    user = _Sources([(fmt.name, fmt.user_fields(doc)) for fmt, doc in documents])
    civitai = _Sources(
        [(fmt.name, fmt.civitai_fields(doc, context)) for fmt, doc in documents if doc]
    )
    head = _header_fields(header)
    every = _Sources([*user.sources, *civitai.sources, (HEADER, head)])
    first = every.first

    trained_words = civitai.union("trained_words")
    header_triggers = head.get("triggers", [])
    user_activation = user.first("activation_text")
    activation = user_activation or ", ".join(trained_words or header_triggers)
    user_sd_version = user.first("sd_version")
    base_model = first("base_model") or _SD_VERSION_LABELS.get((user_sd_version or "").casefold())
    metadata = AdapterMetadata(
        name=first("name") or "",  # the importer names a new adapter after its file
        version_name=first("version_name"),
        description=first("description"),
        author=first("author"),
        base_model=base_model,
        sd_version=user_sd_version or _sd_version_of(base_model),
        tags=every.union("tags"),
        trained_words=trained_words,
        triggers=unique_words([*split_list(user_activation), *trained_words, *header_triggers]),
        activation_text=activation or None,
        preferred_weight=first("preferred_weight"),
        negative_text=first("negative_text"),
        notes=first("notes"),
        nsfw_level=_nsfw_level(every.values("nsfw_level"), every.values("nsfw")),
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
        extra=_extra(header, documents),
    )
    metadata.provenance = {**user.provenance, **every.provenance}
    return metadata


def _header_fields(header: HeaderInfo | None) -> Fields:
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


def _extra(
    header: HeaderInfo | None, documents: Sequence[tuple[SidecarFormat, dict[str, Any]]]
) -> dict[str, Any]:
    raw: dict[str, Any] = {fmt.name: doc for fmt, doc in documents}
    if header is not None:
        raw[HEADER] = header.raw
    return {key: value for key, value in raw.items() if value is not None}


def _nsfw_level(levels: list[Any], flags: list[Any]) -> int | None:
    """The first positive `nsfwLevel`; 0 (unrated) only when nothing else says more."""
    level = next((value for value in levels if value and value > 0), None)
    if level is None and 0 in levels:
        level = 0
    if any(flag is True for flag in flags):
        level = max(level or 0, 1)
    return level


def _sd_version_of(base_model: str | None) -> str | None:
    label = (base_model or "").casefold()
    return next((sd for prefix, sd in _BASE_MODEL_SD_VERSIONS if label.startswith(prefix)), None)
