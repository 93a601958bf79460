"""Fixture LoRA libraries on disk: real safetensors files, every sidecar format of
docs/FORMATS.md, and the broken files a real library holds.

`build_fixture_library` makes a small library whose every file is there for a reason and
returns what a correct importer must find in it; `build_bulk_library` makes many small distinct
models quickly, for benchmarks. The builders for single files and sidecars are public so a test
can make exactly the case it needs.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

F32_BYTES = 4
MIB = 1024 * 1024
SD15_MODEL_HASH = "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516"

# --- model files -------------------------------------------------------------------------


def tensor_names(count: int) -> list[str]:
    """Names kohya gives a LoRA's tensors: down/up pairs of UNet attention projections."""
    names = []
    for index in range(count):
        block, kind = divmod(index, 2)
        names.append(
            f"lora_unet_down_blocks_0_attentions_{block}_proj_in."
            f"{'lora_down' if kind == 0 else 'lora_up'}.weight"
        )
    return sorted(names)


def tensor_payload(*, tensors: int = 2, tensor_bytes: int = 64, seed: int = 0) -> bytes:
    """The tensor bytes of a model: `tensors` F32 tensors of `tensor_bytes` each, in the order
    `write_safetensors` lays them out (so their SHA-256 is kohya's `sshs_model_hash`)."""
    if tensor_bytes % F32_BYTES:
        raise ValueError("tensor_bytes must be a multiple of 4 (F32 tensors)")
    floats = tensors * tensor_bytes // F32_BYTES
    rng = random.Random(seed)
    return struct.pack(f"<{floats}f", *(rng.uniform(-0.05, 0.05) for _ in range(floats)))


def safetensors_bytes(
    metadata: dict[str, str] | None = None,
    *,
    tensors: int = 2,
    tensor_bytes: int = 64,
    seed: int = 0,
) -> bytes:
    """A complete valid safetensors file: header (padded to 8 bytes, as the library does)
    followed by the tensor bytes."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    elements = tensor_bytes // F32_BYTES
    for index, name in enumerate(tensor_names(tensors)):
        start = index * tensor_bytes
        header[name] = {
            "dtype": "F32",
            "shape": [elements, 1] if index % 2 else [1, elements],
            "data_offsets": [start, start + tensor_bytes],
        }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    payload = tensor_payload(tensors=tensors, tensor_bytes=tensor_bytes, seed=seed)
    return struct.pack("<Q", len(encoded)) + encoded + payload


def write_safetensors(
    path: Path,
    metadata: dict[str, str] | None = None,
    *,
    tensors: int = 2,
    tensor_bytes: int = 64,
    seed: int = 0,
) -> bytes:
    """Write a real safetensors file at `path` and return its bytes (for the expected hash)."""
    data = safetensors_bytes(metadata, tensors=tensors, tensor_bytes=tensor_bytes, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def write_raw_header(
    path: Path, header: bytes, *, length: int | None = None, tail: bytes = b""
) -> bytes:
    """A file of u64 `length` (default: the header's), `header`, then `tail`: for bad files."""
    data = struct.pack("<Q", len(header) if length is None else length) + header + tail
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def kohya_metadata(
    changes: Mapping[str, str | None] | None = None,
    /,
    *,
    tensors: int = 2,
    tensor_bytes: int = 64,
    seed: int = 0,
    **overrides: str | None,
) -> dict[str, str]:
    """Header metadata as kohya's sd-scripts writes it for an SD 1.5 LoRA, with the real
    `sshs_model_hash` of the tensors `write_safetensors(..., seed=seed)` writes.

    Changes use the real key names, as a mapping (`{"modelspec.title": "x"}`) or keywords
    (`ss_output_name="x"`); None removes a key.
    """
    payload = tensor_payload(tensors=tensors, tensor_bytes=tensor_bytes, seed=seed)
    tensor_hash = hashlib.sha256(payload).hexdigest()
    metadata: dict[str, str] = {
        "ss_session_id": str(1_000_000 + seed),
        "ss_training_started_at": "1700000000.25",
        "ss_training_finished_at": "1700003600.75",
        "ss_output_name": "inkwash-style",
        "ss_learning_rate": "0.0001",
        "ss_unet_lr": "0.0001",
        "ss_text_encoder_lr": "5e-05",
        "ss_num_train_images": "40",
        "ss_num_epochs": "10",
        "ss_epoch": "10",
        "ss_steps": "4000",
        "ss_max_train_steps": "4000",
        "ss_lr_scheduler": "cosine_with_restarts",
        "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit",
        "ss_seed": "42",
        "ss_clip_skip": "2",
        "ss_mixed_precision": "fp16",
        "ss_noise_offset": "None",
        "ss_training_comment": "None",
        "ss_network_module": "networks.lora",
        "ss_network_dim": "32",
        "ss_network_alpha": "16.0",
        "ss_network_args": json.dumps({"conv_dim": "8", "conv_alpha": "1"}),
        "ss_v2": "False",
        "ss_base_model_version": "sd_v1",
        "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
        "ss_sd_model_hash": "81761151",
        "ss_new_sd_model_hash": SD15_MODEL_HASH,
        "ss_vae_name": "None",
        "ss_resolution": "(512, 512)",
        "ss_tag_frequency": json.dumps(
            {
                "10_inkwash": {"inkwash": 40, " monochrome": 31, "landscape": 12, "tree": 5},
                "5_portraits": {"inkwash": 20, "portrait": 18, "monochrome": 9},
            }
        ),
        "ss_dataset_dirs": json.dumps(
            {
                "10_inkwash": {"n_repeats": 10, "img_count": 30},
                "5_portraits": {"n_repeats": 5, "img_count": 10},
            }
        ),
        "sshs_model_hash": tensor_hash,
        "sshs_legacy_hash": tensor_hash[:8],
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": "inkwash-style",
        "modelspec.date": "2023-11-14T22:13:20",
        "modelspec.resolution": "512x512",
        "modelspec.prediction_type": "epsilon",
    }
    for key, value in {**(changes or {}), **overrides}.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return metadata


# --- sidecars ----------------------------------------------------------------------------


def sidecar_path(model_path: Path, suffix: str) -> Path:
    """`<stem><suffix>` beside the model, e.g. `sidecar_path(p, ".civitai.info")`."""
    return model_path.with_name(model_path.stem + suffix)


def write_json(path: Path, data: Any, *, indent: int | None = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    return path


def edit_json(path: Path, **changes: Any) -> None:
    """Set these top-level keys of the JSON document at `path`."""
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document, indent=2))


def civitai_version(
    *,
    sha256: str,
    file_name: str,
    size_kb: float = 144.5,
    version_id: int = 101,
    model_id: int = 11,
    name: str = "v1.0",
    model_name: str = "Ink Wash",
    model_type: str = "LORA",
    base_model: str = "SD 1.5",
    trained_words: list[str] | None = None,
    description: str | None = "<p>First release.</p>",
    nsfw_level: int = 1,
    nsfw: bool = False,
    published_at: str = "2024-02-03T04:05:06.000Z",
    download_count: int = 1234,
) -> dict[str, Any]:
    """A Civitai model-version JSON, as `GET /api/v1/model-versions/by-hash/{hash}` returns it
    (and Civitai Helper saves it as `<stem>.civitai.info`)."""
    upper = sha256.upper()
    download_url = f"https://civitai.com/api/download/models/{version_id}"
    return {
        "id": version_id,
        "modelId": model_id,
        "name": name,
        "createdAt": "2024-02-01T10:00:00.000Z",
        "updatedAt": "2024-02-05T10:00:00.000Z",
        "status": "Published",
        "publishedAt": published_at,
        "trainedWords": ["inkwash"] if trained_words is None else trained_words,
        "trainingStatus": None,
        "trainingDetails": None,
        "baseModel": base_model,
        "baseModelType": "Standard",
        "earlyAccessEndsAt": None,
        "description": description,
        "uploadType": "Created",
        "air": f"urn:air:sd1:lora:civitai:{model_id}@{version_id}",
        "nsfwLevel": nsfw_level,
        "stats": {"downloadCount": download_count, "thumbsUpCount": 87, "thumbsDownCount": 1},
        "model": {"name": model_name, "type": model_type, "nsfw": nsfw, "poi": False},
        "files": [
            {
                "id": version_id * 10,
                "sizeKB": size_kb,
                "name": file_name,
                "type": "Model",
                "pickleScanResult": "Success",
                "virusScanResult": "Success",
                "scannedAt": "2024-02-01T10:05:00.000Z",
                "metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
                "hashes": {
                    "AutoV1": "5D1E5A1B",
                    "AutoV2": upper[:10],
                    "SHA256": upper,
                    "CRC32": "9A3C3F0E",
                    "BLAKE3": "B" * 64,
                    "AutoV3": "C" * 12,
                },
                "primary": True,
                "downloadUrl": download_url,
            }
        ],
        "images": [
            {
                "url": f"https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/{version_id}/width=512",
                "nsfwLevel": 1,
                "width": 512,
                "height": 768,
                "hash": "U9F~gb~q00M{~q%MM{j[00M{%Mj[",
                "type": "image",
                "meta": {
                    "prompt": "inkwash, mountain landscape, <lora:inkwash-style:0.8>",
                    "negativePrompt": "blurry",
                    "seed": 1234,
                    "steps": 25,
                    "cfgScale": 7,
                    "sampler": "DPM++ 2M Karras",
                },
            }
        ],
        "downloadUrl": download_url,
    }


def civitai_model(
    versions: list[dict[str, Any]],
    *,
    model_id: int = 11,
    name: str = "Ink Wash",
    description: str = "<p>Traditional <b>ink wash</b> painting &amp; sumi-e.</p>",
    tags: list[str] | None = None,
    creator: str = "sumi_painter",
    nsfw: bool = False,
) -> dict[str, Any]:
    """A Civitai model JSON, as `GET /api/v1/models/{id}` returns it; `versions` are
    model-version JSONs (their `model` block is dropped, as the API does here)."""
    return {
        "id": model_id,
        "name": name,
        "description": description,
        "allowNoCredit": True,
        "allowCommercialUse": ["Image"],
        "allowDerivatives": True,
        "type": "LORA",
        "minor": False,
        "poi": False,
        "nsfw": nsfw,
        "nsfwLevel": 1,
        "cosmetic": None,
        "stats": {
            "downloadCount": 5000,
            "favoriteCount": 0,
            "thumbsUpCount": 300,
            "thumbsDownCount": 2,
            "commentCount": 12,
            "ratingCount": 0,
            "rating": 0,
            "tippedAmountCount": 3,
        },
        "creator": {"username": creator, "image": "https://image.civitai.com/avatar.png"},
        "tags": ["style", "ink"] if tags is None else tags,
        "modelVersions": [
            {key: value for key, value in version.items() if key != "model"} for version in versions
        ],
    }


def a1111_metadata(
    *,
    description: str = "",
    activation_text: str = "",
    preferred_weight: float = 0,
    sd_version: str = "Unknown",
    negative_text: str = "",
    notes: str = "",
) -> dict[str, Any]:
    """AUTOMATIC1111's user metadata, as its LoRA card editor saves `<stem>.json`."""
    return {
        "description": description,
        "sd version": sd_version,
        "activation text": activation_text,
        "preferred weight": preferred_weight,
        "negative text": negative_text,
        "notes": notes,
    }


def comfyui_metadata(
    model_path: Path,
    *,
    sha256: str,
    size: int,
    civitai: dict[str, Any] | None = None,
    model_name: str | None = None,
    base_model: str = "SD 1.5",
    tags: list[str] | None = None,
    notes: str = "",
    usage_tips: dict[str, Any] | None = None,
    favorite: bool = False,
    model_description: str = "",
) -> dict[str, Any]:
    """ComfyUI LoRA Manager's `<stem>.metadata.json` (unknown keys included, as it writes)."""
    return {
        "file_name": model_path.stem,
        "model_name": model_name or model_path.stem,
        "file_path": str(model_path).replace(os.sep, "/"),
        "size": size,
        "modified": 1707000000.5,
        "sha256": sha256,
        "base_model": base_model,
        "preview_url": str(sidecar_path(model_path, ".preview.png")).replace(os.sep, "/"),
        "preview_nsfw_level": 1,
        "notes": notes,
        "from_civitai": civitai is not None,
        "civitai": civitai or {},
        "tags": tags or [],
        "modelDescription": model_description,
        "civitai_deleted": False,
        "favorite": favorite,
        "exclude": False,
        "db_checked": False,
        "last_checked_at": 1707000100.0,
        "usage_tips": json.dumps(usage_tips or {}),
    }


def cm_info(
    *,
    sha256: str,
    model_id: int = 21,
    model_name: str = "Clay Figures",
    version_id: int = 201,
    version_name: str = "v2",
    base_model: str = "SDXL 1.0",
    trained_words: list[str] | None = None,
    tags: list[str] | None = None,
    author: str = "claymaker",
    nsfw: bool = False,
    user_title: str | None = None,
    description: str = "<p>Claymation look.</p>",
) -> dict[str, Any]:
    """Stability Matrix's `<stem>.cm-info.json`."""
    return {
        "ModelId": model_id,
        "ModelName": model_name,
        "ModelDescription": description,
        "Nsfw": nsfw,
        "Tags": ["clay", "style"] if tags is None else tags,
        "ModelType": "LORA",
        "VersionId": version_id,
        "VersionName": version_name,
        "VersionDescription": "<p>Sharper edges.</p>",
        "AuthorUsername": author,
        "BaseModel": base_model,
        "FileMetadata": {"Format": "SafeTensor", "Size": "Pruned", "Fp": "Fp16"},
        "ImportedAt": "2024-03-01T12:00:00+00:00",
        "Hashes": {"SHA256": sha256.upper(), "CRC32": "12AB34CD", "BLAKE3": "D" * 64},
        "TrainedWords": ["claymation"] if trained_words is None else trained_words,
        "Stats": {"downloadCount": 777, "ratingCount": 5, "rating": 4.8},
        "UserTitle": user_title,
        "ThumbnailImageUrl": f"https://image.civitai.com/thumb/{version_id}.jpeg",
    }


def png_bytes(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (40, 40, 40)) -> bytes:
    """A tiny valid PNG (8-bit RGB), built with zlib and struct only."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def write_preview(model_path: Path, suffix: str = ".preview.png") -> Path:
    path = sidecar_path(model_path, suffix)
    path.write_bytes(png_bytes())
    return path


# --- the fixture library -----------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedModel:
    """A readable model and what merging its header and sidecars must give.

    List fields are subsets: the merged list must contain them (in any order).
    """

    key: str
    path: Path
    sha256: str
    size: int
    name: str
    version_name: str | None = None
    base_model: str | None = None
    description_contains: str | None = None
    tags: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    activation_text: str | None = None
    preferred_weight: float | None = None
    declared_sha256: str | None = None
    civitai_version_id: int | None = None
    nsfw_level: int | None = None
    sidecars: frozenset[str] = frozenset()  # SidecarFiles field names that exist
    sidecar_errors: dict[str, str] = field(default_factory=dict)  # file name → reason part
    aliases: tuple[Path, ...] = ()  # other paths (symlinks) to the same file

    @property
    def claim_matches(self) -> bool:
        """False when a sidecar claims a SHA-256 that is not the file's."""
        return self.declared_sha256 is None or self.declared_sha256 == self.sha256


@dataclass(frozen=True)
class BadFile:
    """A model-named path that cannot be imported, and why.

    kind: "header" (read_header raises SafetensorsError), "directory", "broken_symlink" or
    "symlink_loop" (opening it raises OSError with `errno`). `reason` is a substring of the
    message read_header gives.
    """

    key: str
    path: Path
    kind: str
    reason: str
    errno: int | None = None


@dataclass
class FixtureLibrary:
    root: Path
    models: dict[str, ExpectedModel] = field(default_factory=dict)
    bad_files: dict[str, BadFile] = field(default_factory=dict)
    listed_only: list[Path] = field(default_factory=list)  # .pt/.ckpt/.bin: listed, never read
    symlinked_dirs: list[Path] = field(default_factory=list)
    directory_loops: list[Path] = field(default_factory=list)  # links to an ancestor folder

    def model(self, key: str) -> ExpectedModel:
        return self.models[key]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_fixture_library(root: Path) -> FixtureLibrary:
    """Create the fixture library under `root` (which may exist) and describe it."""
    root.mkdir(parents=True, exist_ok=True)
    library = FixtureLibrary(root=root)
    _add_full_model(library)
    _add_header_only(library)
    _add_info_only(library)
    _add_stability_matrix(library)
    _add_comfyui(library)
    _add_user_edited(library)
    _add_wrong_claim(library)
    _add_nothing_on_civitai(library)
    _add_sidecar_errors(library)
    _add_listed_only(library)
    _add_links(library)
    _add_bad_files(library)
    return library


def _add(library: FixtureLibrary, model: ExpectedModel) -> None:
    library.models[model.key] = model


def _add_full_model(library: FixtureLibrary) -> None:
    """Every sidecar at once; the `.json` is a Civitai model JSON with A1111 keys mixed in."""
    path = library.root / "characters" / "anime" / "ink-wash.safetensors"
    data = write_safetensors(path, kohya_metadata(seed=1), seed=1)
    sha = _sha256(data)
    version = civitai_version(
        sha256=sha, file_name=path.name, size_kb=len(data) / 1024, nsfw_level=1
    )
    older = civitai_version(
        sha256="0" * 64, file_name="ink-wash-v0.safetensors", version_id=100, name="v0.9"
    )
    write_json(sidecar_path(path, ".civitai.info"), version)
    model_json = civitai_model([older, version], tags=["style", "Ink"])
    model_json.update({"activation text": "inkwash, ink style", "sd version": "SD1"})
    write_json(sidecar_path(path, ".json"), model_json)
    comfy_block = dict(version, trainedWords=["inkwash", "sumi-e"])
    write_json(
        sidecar_path(path, ".metadata.json"),
        comfyui_metadata(
            path,
            sha256=sha,
            size=len(data),
            civitai=comfy_block,
            model_name="Ink Wash",
            tags=["traditional", "style"],
            notes="Best at 0.7 with a paper texture.",
            usage_tips={"strength": 0.7, "clip_skip": 2},
            favorite=True,
        ),
    )
    write_json(
        sidecar_path(path, ".cm-info.json"),
        cm_info(
            sha256=sha,
            model_name="Ink Wash",
            base_model="SD 1.5",
            tags=["painting"],
            trained_words=["sumi-e style"],
        ),
    )
    write_preview(path)
    _add(
        library,
        ExpectedModel(
            key="full",
            path=path,
            sha256=sha,
            size=len(data),
            name="Ink Wash",
            version_name="v1.0",
            base_model="SD 1.5",
            description_contains="First release.",
            tags=("style", "Ink", "traditional", "painting"),
            triggers=("inkwash", "ink style", "sumi-e", "sumi-e style"),
            activation_text="inkwash, ink style",
            preferred_weight=0.7,
            declared_sha256=sha,
            civitai_version_id=101,
            nsfw_level=1,
            sidecars=frozenset({"civitai_info", "json", "metadata_json", "cm_info", "preview"}),
        ),
    )


def _add_header_only(library: FixtureLibrary) -> None:
    path = library.root / "styles" / "neon-glow.safetensors"
    metadata = kohya_metadata(
        {
            "ss_output_name": "neon_glow_xl",
            "ss_base_model_version": "sdxl_base_v1-0",
            "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
            "ss_resolution": "(1024, 1024)",
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
            "modelspec.title": "Neon Glow",
            "modelspec.author": "glowsmith",
            "modelspec.description": "Glowing neon outlines.",
            "modelspec.trigger_phrase": "neon glow, glowing lines",
            "modelspec.tags": "style, neon",
            "modelspec.resolution": "1024x1024",
        },
        seed=2,
    )
    data = write_safetensors(path, metadata, seed=2)
    _add(
        library,
        ExpectedModel(
            key="header_only",
            path=path,
            sha256=_sha256(data),
            size=len(data),
            name="Neon Glow",
            base_model="SDXL 1.0",
            description_contains="Glowing neon",
            tags=("style", "neon", "inkwash"),
            triggers=("neon glow", "glowing lines"),
            activation_text="neon glow, glowing lines",
        ),
    )


def _add_info_only(library: FixtureLibrary) -> None:
    """A header without metadata, and only a `.civitai.info`."""
    path = library.root / "styles" / "paper-cut.safetensors"
    data = write_safetensors(path, None, seed=3)
    sha = _sha256(data)
    write_json(
        sidecar_path(path, ".civitai.info"),
        civitai_version(
            sha256=sha,
            file_name=path.name,
            version_id=301,
            model_id=31,
            name="Dev 1",
            model_name="Paper Cut",
            base_model="Flux.1 D",
            trained_words=["papercut", "layered paper"],
            nsfw_level=0,
            nsfw=False,
        ),
    )
    _add(
        library,
        ExpectedModel(
            key="info_only",
            path=path,
            sha256=sha,
            size=len(data),
            name="Paper Cut",
            version_name="Dev 1",
            base_model="Flux.1 D",
            triggers=("papercut", "layered paper"),
            activation_text="papercut, layered paper",
            declared_sha256=sha,
            civitai_version_id=301,
            nsfw_level=0,
            sidecars=frozenset({"civitai_info"}),
        ),
    )


def _add_stability_matrix(library: FixtureLibrary) -> None:
    path = library.root / "stability" / "Lora" / "clay-figures.safetensors"
    data = write_safetensors(path, kohya_metadata({"modelspec.title": "clay"}, seed=4), seed=4)
    sha = _sha256(data)
    write_json(sidecar_path(path, ".cm-info.json"), cm_info(sha256=sha, nsfw=True))
    write_preview(path, ".png")
    _add(
        library,
        ExpectedModel(
            key="stability_matrix",
            path=path,
            sha256=sha,
            size=len(data),
            name="Clay Figures",
            version_name="v2",
            base_model="SDXL 1.0",
            description_contains="Claymation look.",
            tags=("clay", "style"),
            triggers=("claymation",),
            activation_text="claymation",
            declared_sha256=sha,
            civitai_version_id=201,
            nsfw_level=1,
            sidecars=frozenset({"cm_info", "preview"}),
        ),
    )


def _add_comfyui(library: FixtureLibrary) -> None:
    path = library.root / "comfy" / "loras" / "watercolor.safetensors"
    data = write_safetensors(path, kohya_metadata(seed=5), seed=5)
    sha = _sha256(data)
    block = civitai_version(
        sha256=sha,
        file_name=path.name,
        version_id=501,
        model_id=51,
        name="v3",
        model_name="Watercolor Dream",
        base_model="SDXL 1.0",
        trained_words=["watercolor", "wet paper"],  # "wet paper" added by the user
        nsfw_level=2,
    )
    write_json(
        sidecar_path(path, ".metadata.json"),
        comfyui_metadata(
            path,
            sha256=sha,
            size=len(data),
            civitai=block,
            model_name="Watercolor Dream",
            base_model="SDXL 1.0",
            tags=["watercolor", "painting"],
            notes="Lower CFG helps.",
            usage_tips={"strength": 0.65, "strength_min": 0.4, "strength_max": 0.9},
            favorite=True,
            model_description="<p>Soft <i>watercolor</i> washes.</p>",
        ),
    )
    write_preview(path)
    _add(
        library,
        ExpectedModel(
            key="comfyui",
            path=path,
            sha256=sha,
            size=len(data),
            name="Watercolor Dream",
            version_name="v3",
            base_model="SDXL 1.0",
            description_contains="Soft watercolor washes.",
            tags=("watercolor", "painting"),
            triggers=("watercolor", "wet paper"),
            preferred_weight=0.65,
            declared_sha256=sha,
            civitai_version_id=501,
            nsfw_level=2,
            sidecars=frozenset({"metadata_json", "preview"}),
        ),
    )


def _add_user_edited(library: FixtureLibrary) -> None:
    """AUTOMATIC1111 user edits beside Civitai data: the edits must win."""
    path = library.root / "a1111" / "Lora" / "retro-anime.safetensors"
    data = write_safetensors(path, kohya_metadata(seed=6), seed=6)
    sha = _sha256(data)
    write_json(
        sidecar_path(path, ".civitai.info"),
        civitai_version(
            sha256=sha,
            file_name=path.name,
            version_id=601,
            model_id=61,
            model_name="Retro Anime",
            name="90s",
            base_model="Pony",
            description="<p>The Civitai description.</p>",
            trained_words=["retro anime", "cel shading"],
        ),
    )
    write_json(
        sidecar_path(path, ".json"),
        a1111_metadata(
            description="My own notes: great for backgrounds.",
            activation_text="retro anime, 1990s style",
            preferred_weight=0.6,
            sd_version="SDXL",
            negative_text="3d, render",
            notes="Pair with a film grain LoRA.",
        ),
    )
    write_preview(path, ".preview.jpeg")
    _add(
        library,
        ExpectedModel(
            key="user_edited",
            path=path,
            sha256=sha,
            size=len(data),
            name="Retro Anime",
            version_name="90s",
            base_model="Pony",
            description_contains="My own notes",
            triggers=("retro anime", "1990s style", "cel shading"),
            activation_text="retro anime, 1990s style",
            preferred_weight=0.6,
            declared_sha256=sha,
            civitai_version_id=601,
            nsfw_level=1,
            sidecars=frozenset({"civitai_info", "json", "preview"}),
        ),
    )


def _add_wrong_claim(library: FixtureLibrary) -> None:
    """A `.civitai.info` that claims another file's SHA-256 (a renamed or re-saved file)."""
    path = library.root / "misc" / "wrong-claim.safetensors"
    data = write_safetensors(path, kohya_metadata({"modelspec.title": "x"}, seed=7), seed=7)
    wrong = _sha256(b"some other file")
    write_json(
        sidecar_path(path, ".civitai.info"),
        civitai_version(
            sha256=wrong,
            file_name=path.name,
            version_id=701,
            model_id=71,
            model_name="Claimed Model",
        ),
    )
    _add(
        library,
        ExpectedModel(
            key="wrong_claim",
            path=path,
            sha256=_sha256(data),
            size=len(data),
            name="Claimed Model",
            version_name="v1.0",
            base_model="SD 1.5",
            declared_sha256=wrong,
            civitai_version_id=701,
            nsfw_level=1,
            sidecars=frozenset({"civitai_info"}),
        ),
    )


def _add_nothing_on_civitai(library: FixtureLibrary) -> None:
    """Civitai Helper looked the file up and found nothing: `{}`, which is not an error."""
    path = library.root / "misc" / "private-model.safetensors"
    metadata = kohya_metadata({"modelspec.title": None, "ss_output_name": "private_v2"}, seed=8)
    data = write_safetensors(path, metadata, seed=8)
    write_json(sidecar_path(path, ".civitai.info"), {})
    _add(
        library,
        ExpectedModel(
            key="nothing_on_civitai",
            path=path,
            sha256=_sha256(data),
            size=len(data),
            name="private_v2",
            base_model="SD 1.5",
            tags=("inkwash", "monochrome"),
            sidecars=frozenset({"civitai_info"}),
        ),
    )


def _add_sidecar_errors(library: FixtureLibrary) -> None:
    """Good models whose sidecars are broken: the model imports, the sidecar is reported."""
    folder = library.root / "sidecar-errors"
    bad = folder / "bad-sidecar.safetensors"
    data = write_safetensors(bad, kohya_metadata({"modelspec.title": "Bad Info"}, seed=9), seed=9)
    sidecar_path(bad, ".civitai.info").write_text('{\n  "id": 1,\n  "name": ,\n}\n')
    sidecar_path(bad, ".metadata.json").write_text('["not", "an", "object"]')
    _add(
        library,
        ExpectedModel(
            key="bad_sidecar",
            path=bad,
            sha256=_sha256(data),
            size=len(data),
            name="Bad Info",
            base_model="SD 1.5",
            sidecars=frozenset({"civitai_info", "metadata_json"}),
            sidecar_errors={
                "bad-sidecar.civitai.info": "invalid JSON at line 3 column 11",
                "bad-sidecar.metadata.json": "not a JSON object",
            },
        ),
    )
    cut = folder / "truncated-sidecar.safetensors"
    data = write_safetensors(cut, kohya_metadata({"modelspec.title": "Cut"}, seed=10), seed=10)
    full = json.dumps(a1111_metadata(description="never finished", activation_text="cut"))
    sidecar_path(cut, ".json").write_text(full[: len(full) // 2])
    _add(
        library,
        ExpectedModel(
            key="truncated_sidecar",
            path=cut,
            sha256=_sha256(data),
            size=len(data),
            name="Cut",
            base_model="SD 1.5",
            sidecars=frozenset({"json"}),
            sidecar_errors={"truncated-sidecar.json": "truncated JSON"},
        ),
    )


def _add_listed_only(library: FixtureLibrary) -> None:
    folder = library.root / "misc" / "legacy"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(11)
    contents = {
        "old-style.pt": b"PK\x03\x04" + rng.randbytes(252),  # torch.save writes a zip
        "old-checkpoint.ckpt": b"PK\x03\x04" + rng.randbytes(508),
        "embedding.bin": b"\x80\x02" + rng.randbytes(126),  # a bare pickle
    }
    for name, content in contents.items():
        (folder / name).write_bytes(content)
        library.listed_only.append(folder / name)


def _add_links(library: FixtureLibrary) -> None:
    """A file symlink and a folder symlink to models elsewhere, and a link to an ancestor."""
    links = library.root / "links"
    links.mkdir(parents=True, exist_ok=True)
    header_only = library.models["header_only"]
    file_link = links / "neon-glow-link.safetensors"
    file_link.symlink_to(Path("..") / "styles" / "neon-glow.safetensors")
    folder_link = links / "styles-folder"
    folder_link.symlink_to(Path("..") / "styles", target_is_directory=True)
    library.symlinked_dirs.append(folder_link)
    loop = library.root / "loops" / "up"
    loop.parent.mkdir(parents=True, exist_ok=True)
    loop.symlink_to(Path(".."), target_is_directory=True)
    library.directory_loops.append(loop)
    for key in ("header_only", "info_only"):
        model = library.models[key]
        extra = [folder_link / model.path.name]
        if model is header_only:
            extra.insert(0, file_link)
        library.models[key] = replace(model, aliases=model.aliases + tuple(extra))


def _add_bad_files(library: FixtureLibrary) -> None:
    folder = library.root / "broken"
    folder.mkdir(parents=True, exist_ok=True)

    def bad(key: str, name: str, kind: str, reason: str, code: int | None = None) -> Path:
        path = folder / name
        library.bad_files[key] = BadFile(key, path, kind, reason, code)
        return path

    bad("empty", "empty.safetensors", "header", "empty file (0 bytes)").write_bytes(b"")
    bad("too_short", "too-short.safetensors", "header", "file too short").write_bytes(b"\x05\0\0")
    write_raw_header(
        bad("beyond_file", "beyond-file.safetensors", "header", "is beyond the file size"),
        b'{"__metadata__":{}}',
        length=123_456,
    )
    write_raw_header(
        bad("absurd_length", "absurd-length.safetensors", "header", "exceeds the 100 MB limit"),
        b"{}",
        length=2**60,
    )
    write_raw_header(
        bad("invalid_json", "invalid-json.safetensors", "header", "header is not valid JSON"),
        b'{"__metadata__": {"ss_output_name": "x"',
    )
    write_raw_header(
        bad("list_header", "list-header.safetensors", "header", "header is not a JSON object"),
        b'[{"dtype": "F32"}]',
    )
    write_raw_header(
        bad("not_utf8", "not-utf8.safetensors", "header", "header is not valid UTF-8"),
        b'{"__metadata__": {"title": "\xff\xfe"}}',
    )
    write_raw_header(
        bad("metadata_list", "metadata-list.safetensors", "header", "__metadata__ is not an"),
        b'{"__metadata__": ["a", "b"]}',
    )
    directory = bad("directory", "folder.safetensors", "directory", "Is a directory", errno.EISDIR)
    directory.mkdir()
    dangling = bad(
        "broken_symlink", "dangling.safetensors", "broken_symlink", "No such file", errno.ENOENT
    )
    dangling.symlink_to("deleted-long-ago.safetensors")
    loop_reason = "Too many levels of symbolic links"
    loop_a = bad("symlink_loop_a", "loop-a.safetensors", "symlink_loop", loop_reason, errno.ELOOP)
    loop_b = bad("symlink_loop_b", "loop-b.safetensors", "symlink_loop", loop_reason, errno.ELOOP)
    loop_a.symlink_to(loop_b.name)
    loop_b.symlink_to(loop_a.name)


# --- bulk --------------------------------------------------------------------------------

_BULK_BASES = (
    ("sd_v1", "stable-diffusion-v1/lora", "SD 1.5", "SD1"),
    ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", "SDXL 1.0", "SDXL"),
    ("flux1", "flux-1-dev/lora", "Flux.1 D", "Unknown"),
)
_BULK_WORDS = ("ink", "neon", "clay", "paper", "retro", "glow", "pastel", "noir", "pixel", "oil")


def build_bulk_library(
    root: Path,
    count: int,
    *,
    with_sidecars: bool = True,
    seed: int = 0,
    per_folder: int = 250,
    tensor_bytes: int = 64,
) -> list[Path]:
    """`count` small distinct models under `root/bulk/NNN/`, each (by default) with a
    `.civitai.info` and an A1111 `.json`; returns the model paths in creation order.

    Headers differ per model, so whole-file hashes differ; the tensor bytes are shared (the
    point is many files, not many weights).
    """
    rng = random.Random(seed)
    payload_seed = rng.randrange(2**31)
    tensor_hash = _sha256(tensor_payload(tensor_bytes=tensor_bytes, seed=payload_seed))
    paths: list[Path] = []
    for index in range(count):
        folder = root / "bulk" / f"{index // per_folder:03d}"
        if index % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        word = _BULK_WORDS[index % len(_BULK_WORDS)]
        version, architecture, label, sd_version = _BULK_BASES[index % len(_BULK_BASES)]
        title = f"{word}-{seed}-{index:05d}"
        metadata = {
            "ss_output_name": title,
            "ss_base_model_version": version,
            "ss_network_dim": str(2 ** (index % 6 + 2)),
            "ss_training_finished_at": str(1_700_000_000 + index * 60),
            "sshs_model_hash": tensor_hash,
            "modelspec.architecture": architecture,
            "modelspec.title": title,
            "modelspec.trigger_phrase": f"{word} style",
            "modelspec.tags": f"{word},style,bulk",
        }
        path = folder / f"{title}.safetensors"
        data = safetensors_bytes(metadata, tensor_bytes=tensor_bytes, seed=payload_seed)
        with open(path, "wb") as handle:
            handle.write(data)
        if with_sidecars:
            sha = _sha256(data)
            info = civitai_version(
                sha256=sha,
                file_name=path.name,
                size_kb=len(data) / 1024,
                version_id=1_000_000 + index,
                model_id=500_000 + index,
                name=f"v{index % 4 + 1}.0",
                model_name=f"{word.title()} Bulk {index}",
                base_model=label,
                trained_words=[f"{word} style"],
            )
            write_json(sidecar_path(path, ".civitai.info"), info, indent=None)
            user = a1111_metadata(
                activation_text=f"{word} style", preferred_weight=0.8, sd_version=sd_version
            )
            write_json(sidecar_path(path, ".json"), user, indent=None)
        paths.append(path)
    return paths
