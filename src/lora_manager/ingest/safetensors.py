"""The safetensors header: read it safely, then describe its kohya/modelspec metadata.

A safetensors file is 8 bytes of little-endian u64 N, N bytes of UTF-8 JSON, then the tensor
bytes. `read_header` reads only the first 8 + N bytes, after checking N against the file size
and a fixed limit, so a corrupt or hostile file can neither exhaust memory nor make us read
gigabytes of weights. `describe_header` turns the trainer's string metadata into the few fields
a catalog shows; it never raises, whatever the values hold.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

MAX_HEADER_BYTES = 100 * 1024 * 1024
_PREFIX_BYTES = 8
TAG_FREQUENCY_LIMIT = 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Values kohya writes for "not set"; they are not information.
_UNSET_VALUES = frozenset({"", "none", "null", "nan"})


class RawReader(Protocol):
    """What the header parser reads from: an unbuffered file or any stream with `readinto`."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class SafetensorsError(ValueError):
    """The file is not a readable safetensors file; the message says precisely why."""


@dataclass(frozen=True)
class SafetensorsHeader:
    """What the header holds: the `__metadata__` strings and the shape of the rest."""

    metadata: dict[str, str]
    tensor_count: int
    header_length: int
    file_size: int
    # End of the last tensor's data_offsets: None when the entries are not well formed.
    data_size: int | None = None

    @property
    def truncated(self) -> bool:
        """True when the tensors the header declares extend past the end of the file."""
        if self.data_size is None:
            return False
        return _PREFIX_BYTES + self.header_length + self.data_size > self.file_size

    @property
    def problem(self) -> str | None:
        """Why a well-formed header still makes a broken file (a partial download), or None."""
        if not self.truncated:
            return None
        present = self.file_size - _PREFIX_BYTES - self.header_length
        return (
            f"truncated: header declares {self.data_size} bytes of tensor data, file has {present}"
        )


def human_size(size: int) -> str:
    """A byte count in binary units, as people read it: 100 MB, 1.5 GB, 1 EB."""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if value < 1024:
            return f"{size} bytes" if unit == "bytes" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} EB"


def read_header(path: Path) -> SafetensorsHeader:
    """Read and parse the header of the safetensors file at `path`, never its tensor bytes.

    Raises `SafetensorsError` when the content is not a valid header and `OSError` when the
    file cannot be opened or read (missing, a directory, a dangling or looping symlink).
    Pass regular files only: opening a FIFO would block.
    """
    # Unbuffered, so not one byte beyond the header is read from disk.
    with open(path, "rb", buffering=0) as handle:
        file_size = os.fstat(handle.fileno()).st_size
        return parse_header_stream(handle, file_size)


def parse_header_stream(stream: RawReader, file_size: int) -> SafetensorsHeader:
    """Parse a header from `stream` positioned at the file's start; reads exactly 8 + N bytes.

    Every bound is checked before the header buffer is allocated.
    """
    if file_size == 0:
        raise SafetensorsError("empty file (0 bytes)")
    if file_size < _PREFIX_BYTES:
        raise SafetensorsError(f"file too short for a header ({file_size} bytes)")
    prefix = _read_exactly(stream, _PREFIX_BYTES)
    if len(prefix) < _PREFIX_BYTES:
        raise SafetensorsError(f"file too short for a header ({len(prefix)} bytes)")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES:
        raise SafetensorsError(
            f"header length {human_size(length)} ({length} bytes) exceeds the "
            f"{human_size(MAX_HEADER_BYTES)} limit"
        )
    if length > file_size - _PREFIX_BYTES:
        raise SafetensorsError(f"header length {length} is beyond the file size {file_size}")
    raw = _read_exactly(stream, length)
    if len(raw) < length:
        raise SafetensorsError(f"header truncated: expected {length} bytes, read {len(raw)}")
    return _parse_header_bytes(raw, length, file_size)


def _read_exactly(stream: RawReader, count: int) -> bytes:
    """Up to `count` bytes; loops because raw reads may return short."""
    buffer = bytearray(count)
    view = memoryview(buffer)
    filled = 0
    while filled < count:
        got = stream.readinto(view[filled:])
        if not got:
            break
        filled += got
    return bytes(view[:filled])


def _parse_header_bytes(raw: bytes, length: int, file_size: int) -> SafetensorsHeader:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafetensorsError(
            f"header is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise SafetensorsError("header is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer beyond the digit limit
        raise SafetensorsError(f"header is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SafetensorsError(f"header is not a JSON object (found {_json_type(document)})")
    metadata_value = document.get("__metadata__", {})
    if metadata_value is None:
        metadata_value = {}
    if not isinstance(metadata_value, dict):
        raise SafetensorsError(
            f"__metadata__ is not an object (found {_json_type(metadata_value)})"
        )
    metadata = {str(key): _as_string(value) for key, value in metadata_value.items()}
    tensors = {key: value for key, value in document.items() if key != "__metadata__"}
    return SafetensorsHeader(
        metadata=metadata,
        tensor_count=len(tensors),
        header_length=length,
        file_size=file_size,
        data_size=_data_size(tensors),
    )


def _as_string(value: Any) -> str:
    # The format says strings; writers that break it still deserve to be read.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_type(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, float) else "an object")


def _data_size(tensors: dict[str, Any]) -> int | None:
    end = 0
    for entry in tensors.values():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return None
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in offsets):
            return None
        end = max(end, offsets[1])
    return end


# --- describing the metadata -------------------------------------------------------------

# (prefix of modelspec.architecture before "/", label); the first matching prefix wins.
_ARCHITECTURE_LABELS: tuple[tuple[str, str], ...] = (
    ("stable-diffusion-v1", "SD 1.5"),
    ("stable-diffusion-v2", "SD 2"),
    ("stable-diffusion-xl-v1-refiner", "SDXL Refiner"),
    ("stable-diffusion-xl", "SDXL 1.0"),
    ("stable-diffusion-3.5-large", "SD 3.5 Large"),
    ("stable-diffusion-3.5-medium", "SD 3.5 Medium"),
    ("stable-diffusion-3-5-large", "SD 3.5 Large"),
    ("stable-diffusion-3-5-medium", "SD 3.5 Medium"),
    ("stable-diffusion-3", "SD 3"),
    ("flux-1-dev", "Flux.1 D"),
    ("flux-1-schnell", "Flux.1 S"),
    ("flux-1", "Flux.1"),
    ("chroma", "Chroma"),
    ("lumina-2", "Lumina"),
)
# (prefix of ss_base_model_version, label): kohya writes sd_v1, sd_v2(_v), sdxl_base_v1-0...
_BASE_VERSION_LABELS: tuple[tuple[str, str], ...] = (
    ("sd_v1", "SD 1.5"),
    ("sd_v2", "SD 2"),
    ("sdxl", "SDXL 1.0"),
    ("sd3", "SD 3"),
    ("flux1", "Flux.1"),
    ("flux_1", "Flux.1"),
)
_TRAINING_KEYS: tuple[str, ...] = (
    "network_module",
    "network_dim",
    "network_alpha",
    "network_args",
    "learning_rate",
    "unet_lr",
    "text_encoder_lr",
    "optimizer",
    "lr_scheduler",
    "num_train_images",
    "num_epochs",
    "epoch",
    "steps",
    "max_train_steps",
    "resolution",
    "clip_skip",
    "mixed_precision",
    "noise_offset",
    "seed",
    "base_model_version",
    "sd_model_name",
    "sd_model_hash",
    "new_sd_model_hash",
    "vae_name",
    "output_name",
    "training_comment",
    "session_id",
)


@dataclass
class HeaderInfo:
    """The catalog-facing reading of a header's metadata; every field may be empty."""

    title: str | None = None
    description: str | None = None
    author: str | None = None
    base_model: str | None = None
    trigger_words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    tensor_sha256: str | None = None
    training: dict[str, str] = field(default_factory=dict)
    published_at: datetime | None = None
    resolution: str | None = None
    license: str | None = None
    usage_hint: str | None = None
    raw: dict[str, str] = field(default_factory=dict)


def describe_header(metadata: dict[str, str]) -> HeaderInfo:
    """Normalise kohya `ss_*` and `modelspec.*` metadata; garbage values are skipped, never
    raised on."""
    return HeaderInfo(
        title=_value(metadata, "modelspec.title") or _value(metadata, "ss_output_name"),
        description=_value(metadata, "modelspec.description"),
        author=_value(metadata, "modelspec.author"),
        base_model=_base_model(metadata),
        trigger_words=split_list(_value(metadata, "modelspec.trigger_phrase")),
        tags=unique_words(
            split_list(_value(metadata, "modelspec.tags"))
            + _frequent_tags(_value(metadata, "ss_tag_frequency"))
        ),
        tensor_sha256=_tensor_sha256(metadata),
        training={
            key: value
            for key in _TRAINING_KEYS
            if (value := _value(metadata, f"ss_{key}")) is not None
        },
        published_at=_published_at(metadata),
        resolution=_resolution(metadata),
        license=_value(metadata, "modelspec.license"),
        usage_hint=_value(metadata, "modelspec.usage_hint"),
        raw=dict(metadata),
    )


def split_list(text: str | None) -> list[str]:
    """Comma-separated words, stripped, empties dropped, first spelling of each kept."""
    if not text:
        return []
    return unique_words(part.strip() for part in text.split(","))


def unique_words(values: Iterable[str]) -> list[str]:
    """Non-empty values once each, compared case-insensitively, first spelling kept."""
    seen: set[str] = set()
    result: list[str] = []
    for value in values:
        key = value.casefold()
        if value and key not in seen:
            seen.add(key)
            result.append(value)
    return result


def _value(metadata: dict[str, str], key: str) -> str | None:
    value = metadata.get(key)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return None if value.casefold() in _UNSET_VALUES else value


def _base_model(metadata: dict[str, str]) -> str | None:
    # The architecture is the more specific of the two (Flux.1 D vs Flux.1), so it goes first.
    architecture = (_value(metadata, "modelspec.architecture") or "").casefold()
    base = architecture.split("/", 1)[0]
    for prefix, label in _ARCHITECTURE_LABELS:
        if base.startswith(prefix):
            return label
    version = (_value(metadata, "ss_base_model_version") or "").casefold()
    for prefix, label in _BASE_VERSION_LABELS:
        if version.startswith(prefix):
            return label
    if (_value(metadata, "ss_v2") or "").casefold() == "true":
        return "SD 2"
    return None


def _frequent_tags(text: str | None) -> list[str]:
    document = _loads(text)
    if not isinstance(document, dict):
        return []
    counts: Counter[str] = Counter()
    for dataset in document.values():
        if not isinstance(dataset, dict):
            continue
        for tag, count in dataset.items():
            name = tag.strip() if isinstance(tag, str) else ""
            if name and isinstance(count, int | float) and not isinstance(count, bool):
                counts[name] += int(count) if math.isfinite(count) else 0
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [name for name, _ in ranked[:TAG_FREQUENCY_LIMIT]]


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _tensor_sha256(metadata: dict[str, str]) -> str | None:
    for key in ("sshs_model_hash", "modelspec.hash_sha256"):
        value = (_value(metadata, key) or "").lower().removeprefix("0x")
        if _HEX64.fullmatch(value):
            return value
    return None


def _published_at(metadata: dict[str, str]) -> datetime | None:
    date = parse_datetime(_value(metadata, "modelspec.date"))
    if date is not None:
        return date
    for key in ("ss_training_finished_at", "ss_training_started_at"):
        date = _from_unix(_value(metadata, key))
        if date is not None:
            return date
    return None


def parse_datetime(text: str | None) -> datetime | None:
    """An ISO 8601 date or date-time as naive UTC; a value without a zone is taken as UTC.

    None when `text` is empty or not a date.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _from_unix(text: str | None) -> datetime | None:
    try:
        seconds = float(text) if text else math.nan
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        return None


def _resolution(metadata: dict[str, str]) -> str | None:
    for key in ("modelspec.resolution", "ss_resolution"):
        numbers = re.findall(r"\d+", _value(metadata, key) or "")
        if len(numbers) == 1:
            return f"{numbers[0]}x{numbers[0]}"
        if len(numbers) == 2:
            return f"{numbers[0]}x{numbers[1]}"
    return None
