"""Sidecar files beside a model: find them, read them, and merge them with the header.

Each format is a module with one `SidecarFormat` (base.py: the file it claims, how it is read,
the catalog fields it gives); `FORMATS` below is the registry, so a new format is a new module
and a line here. The formats, by the tool that writes them:

* `<stem>.civitai.info`   Civitai model-version JSON (Civitai Helper); `{}` = Civitai had nothing
* `<stem>.json`           with `modelVersions`: a Civitai model JSON; with `modelId` and `files`:
                          a Civitai model-version JSON; otherwise AUTOMATIC1111 user metadata
* `<stem>.metadata.json`  ComfyUI LoRA Manager (its `civitai` block is a model-version JSON)
* `<stem>.cm-info.json`   Stability Matrix
* `<stem>.preview.{png,jpg,jpeg,webp,mp4}`, else `<stem>.{png,jpg,jpeg,webp}`: the preview
  (preview.py; found, not read)

merge.py holds the precedence rule: the user's own edits (the AUTOMATIC1111 card) win, then
Civitai's data, then the safetensors header; empty never replaces anything. Nothing here
raises on bad content: a sidecar that cannot be read is reported in `SidecarData.errors` and
merged as absent.
"""

from __future__ import annotations

import os
from collections.abc import Container
from pathlib import Path
from typing import Any

from lora_manager.ingest.safetensors import HeaderInfo
from lora_manager.ingest.sidecars import (
    a1111,
    civitai_model,
    civitai_version,
    comfyui,
    stability_matrix,
)
from lora_manager.ingest.sidecars.a1111 import A1111_EDIT_KEYS
from lora_manager.ingest.sidecars.base import (
    MAX_SIDECAR_BYTES,
    SidecarError,
    SidecarFormat,
    load_sidecar_json,
)
from lora_manager.ingest.sidecars.merge import AdapterMetadata, merge
from lora_manager.ingest.sidecars.preview import PREVIEW_SUFFIXES, find_preview
from lora_manager.ingest.sidecars.values import html_to_text

__all__ = [
    "A1111_EDIT_KEYS",
    "FORMATS",
    "MAX_SIDECAR_BYTES",
    "PREVIEW_SUFFIXES",
    "AdapterMetadata",
    "SidecarData",
    "SidecarError",
    "SidecarFiles",
    "SidecarFormat",
    "find_sidecars",
    "html_to_text",
    "load_sidecar_json",
    "merge_metadata",
    "read_sidecars",
]

# THE REGISTRY, in precedence order (merge.py). Formats sharing a file name (`<stem>.json`)
# are asked in this order whether a document is theirs: AUTOMATIC1111, which takes any
# object, comes after the Civitai ones.
FORMATS: tuple[SidecarFormat, ...] = (
    civitai_version.CIVITAI_INFO,
    civitai_version.VERSION_JSON,
    civitai_model.FORMAT,
    a1111.FORMAT,
    comfyui.FORMAT,
    stability_matrix.FORMAT,
)
_BY_NAME = {fmt.name: fmt for fmt in FORMATS}
# slot → the formats claiming its file, in registry order (all with the same suffix)
_BY_SLOT = {
    slot: [fmt for fmt in FORMATS if fmt.slot == slot]
    for slot in dict.fromkeys(fmt.slot for fmt in FORMATS)
}
assert all(len({fmt.suffix for fmt in group}) == 1 for group in _BY_SLOT.values())


class SidecarFiles:
    """The sidecar files that exist beside one model: one attribute per slot of the registry
    (`civitai_info`, `json`, `metadata_json`, `cm_info`) and `preview`, each a Path or None."""

    __slots__ = ("found", "model_path", "preview")

    def __init__(self, model_path: Path, preview: Path | None = None, **found: Path | None):
        _check(found, _BY_SLOT, "sidecar file slot")
        self.model_path = model_path
        self.preview = preview
        self.found = {slot: path for slot in _BY_SLOT if (path := found.get(slot)) is not None}

    def __getattr__(self, slot: str) -> Path | None:
        if slot in _BY_SLOT:
            return self.found.get(slot)
        raise AttributeError(slot)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SidecarFiles):
            return NotImplemented
        mine = (self.model_path, self.preview, self.found)
        return mine == (other.model_path, other.preview, other.found)

    def __hash__(self) -> int:
        return hash((self.model_path, self.preview, tuple(self.found.items())))

    def __repr__(self) -> str:
        return f"SidecarFiles({self.model_path!r}, preview={self.preview!r}, {self.found!r})"

    def paths(self) -> list[Path]:
        """Every existing sidecar, preview included: the files whose changes mean a re-read."""
        return [*self.found.values(), *([self.preview] if self.preview is not None else [])]


class SidecarData:
    """The parsed JSON of each sidecar, one attribute per format name in the registry (a raw
    dict, None when absent or unreadable): `civitai_info`, `civitai_version`,
    `civitai_model`, `a1111`, `comfyui`, `stability_matrix`.

    `civitai_info == {}` means Civitai Helper looked the file up and Civitai had nothing.
    `errors` maps a sidecar's file name to the reason it was not used.
    """

    __slots__ = ("documents", "errors")

    def __init__(
        self, errors: dict[str, str] | None = None, **documents: dict[str, Any] | None
    ) -> None:
        _check(documents, _BY_NAME, "sidecar format")
        self.documents = {name: doc for name, doc in documents.items() if doc is not None}
        self.errors = dict(errors or {})

    def __getattr__(self, name: str) -> dict[str, Any] | None:
        if name in _BY_NAME:
            return self.documents.get(name)
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SidecarData):
            return NotImplemented
        return (self.documents, self.errors) == (other.documents, other.errors)

    __hash__ = None  # type: ignore[assignment]  # mutable, as `errors` is filled in

    def __repr__(self) -> str:
        return f"SidecarData(documents={self.documents!r}, errors={self.errors!r})"

    def sources(self) -> list[tuple[SidecarFormat, dict[str, Any]]]:
        """Each format that was read with its document, in the registry's order."""
        return [(fmt, self.documents[fmt.name]) for fmt in FORMATS if fmt.name in self.documents]


def _check(names: dict[str, Any], known: dict[str, Any], what: str) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise TypeError(f"no {what} {', '.join(unknown)} (the registry has {', '.join(known)})")


def find_sidecars(model_path: Path, siblings: Container[str] | None = None) -> SidecarFiles:
    """The sidecars of the model at `model_path`, matched by exact file name.

    `siblings` holds the names in the model's directory (a set, or a dict keyed by name, from
    one `os.scandir` by the caller); given it, discovery makes no system call at all. Without
    it, one `lexists` per candidate name. A name that exists but cannot be read (a directory,
    a dangling symlink) is still returned, so `read_sidecars` reports it instead of hiding it.
    """
    directory, stem = model_path.parent, model_path.stem

    def exists(name: str) -> bool:
        return name in siblings if siblings is not None else os.path.lexists(directory / name)

    found = {
        slot: directory / (stem + formats[0].suffix)
        for slot, formats in _BY_SLOT.items()
        if exists(stem + formats[0].suffix)
    }
    return SidecarFiles(model_path, find_preview(directory, stem, exists), **found)


def read_sidecars(files: SidecarFiles) -> SidecarData:
    """Parse every sidecar in `files`; a bad one is reported in `errors`, never raised. A
    file name several formats share is read once, and kept by the first that claims it."""
    data = SidecarData()
    for slot, path in files.found.items():
        claimants = _BY_SLOT[slot]
        try:
            document = claimants[0].read(path)
        except SidecarError as exc:
            data.errors[path.name] = str(exc)
            continue
        owner = next((fmt for fmt in claimants if fmt.claims(document)), None)
        if owner is not None:
            data.documents[owner.name] = document
    return data


def merge_metadata(
    header: HeaderInfo | None,
    sidecars: SidecarData,
    *,
    file_name: str,
    file_sha256: str | None = None,
) -> AdapterMetadata:
    """The header and the sidecars of one model merged by the precedence rule (see
    `merge.merge` for the arguments)."""
    return merge(header, sidecars.sources(), file_name=file_name, file_sha256=file_sha256)
