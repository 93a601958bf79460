"""The reader protocol every sidecar format module fills in, and the JSON reading they share."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_manager.ingest.safetensors import human_size
from lora_manager.ingest.sidecars.values import Fields

MAX_SIDECAR_BYTES = 32 * 1024 * 1024


class SidecarError(ValueError):
    """A sidecar that cannot be used; the message is the precise reason."""


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


@dataclass(frozen=True)
class Context:
    """What a format's Civitai fields may depend on beyond its own document."""

    file_name: str  # the model's own file name, to pick its entry in Civitai's `files[]`
    file_sha256: str | None  # the model's SHA-256, when the importer has hashed it
    declared: tuple[str, ...] = ()  # SHA-256 values the sidecars claim for the model
    version_id: int | None = None  # the Civitai version id a sidecar names for the model


def _claims_any(document: dict[str, Any]) -> bool:
    return True


def _no_fields(document: dict[str, Any]) -> Fields:
    return {}


def _no_civitai_fields(document: dict[str, Any], context: Context) -> Fields:
    return {}


def _no_hashes(document: dict[str, Any]) -> tuple[str, ...]:
    return ()


def _no_version(document: dict[str, Any]) -> int | None:
    return None


@dataclass(frozen=True)
class SidecarFormat:
    """One sidecar format, as the registry (`sidecars/__init__.py`) lists it.

    * `name`: the source's name: the `SidecarData` attribute with its parsed document, the
      key its raw JSON is kept under in the adapter's `extra`, and the provenance of the
      fields it gives (`AdapterMetadata.provenance`).
    * `slot` and `suffix`: it claims the file `<stem><suffix>`, found as `SidecarFiles.<slot>`.
      Formats that share a file name share the slot; the first of them in the registry whose
      `claims(document)` is true owns the file.
    * `read(path)`: the parsed document, or `SidecarError` with the reason.
    * `user_fields(document)`: what the user set by hand (the first tier of the precedence).
    * `civitai_fields(document, context)`: Civitai's data (the second tier); called only for
      a non-empty document.
    * `declared_sha256(document)` and `version_id(document)`: what the document says the
      model is, to pick the matching version of a Civitai model JSON.

    The field names and the precedence between tiers are merge.py's.
    """

    name: str
    slot: str
    suffix: str
    claims: Callable[[dict[str, Any]], bool] = _claims_any
    read: Callable[[Path], dict[str, Any]] = load_sidecar_json
    user_fields: Callable[[dict[str, Any]], Fields] = _no_fields
    civitai_fields: Callable[[dict[str, Any], Context], Fields] = _no_civitai_fields
    declared_sha256: Callable[[dict[str, Any]], tuple[str, ...]] = _no_hashes
    version_id: Callable[[dict[str, Any]], int | None] = _no_version
