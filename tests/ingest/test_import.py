"""The importer against real files: `Importer.run` and `lora-manager import`.

Every test builds a library on disk (tests/support/library.py), imports it into a freshly
migrated database (SQLite and PostgreSQL where the database matters) and checks what the
catalog holds afterwards, black-box: the rules are the module docstring of
`lora_manager.ingest.service`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from lora_manager.catalog import service as catalog_service
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.models import Adapter, AdapterTag
from lora_manager.ingest.service import Importer, ImportSummary
from tests.support.imports import Catalog, import_cli, open_catalog, row_dict
from tests.support.library import (
    ExpectedModel,
    FixtureLibrary,
    build_fixture_library,
    civitai_version,
    edit_json,
    kohya_metadata,
    sidecar_path,
    write_json,
    write_safetensors,
)
from tests.support.migrate import migrate

USER_FIELDS = ("active", "weight", "ordinal", "is_favorite", "rating", "notes", "user_tags")
MODEL_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
# Which SidecarData key keeps the raw JSON of each sidecar kind (`extra` in the catalog).
EXTRA_KEYS = {
    "civitai_info": ("civitai_info",),
    "json": ("civitai_model", "civitai_version", "a1111"),
    "metadata_json": ("comfyui",),
    "cm_info": ("stability_matrix",),
}
# The scanner's own words for paths that are not model files, beside the OSError text the
# fixture library records (what opening the path would raise).
SCAN_REASONS = {
    "directory": ("not a regular file", "is a directory"),
    "broken_symlink": ("broken symlink", "no such file"),
    "symlink_loop": ("symlink loop", "too many levels of symbolic links"),
}


# --- a migrated catalog and imports into it ----------------------------------------------


def user_fields(adapter: Adapter) -> dict[str, Any]:
    return {name: getattr(adapter, name) for name in USER_FIELDS}


def fresh_url(request: pytest.FixtureRequest, like: str, tmp_path: Path) -> str:
    """Another empty database of the same kind as `like`."""
    if like.startswith("sqlite"):
        return f"sqlite:///{tmp_path / f'fresh-{uuid.uuid4().hex[:8]}.db'}"
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture
def library(tmp_path: Path) -> FixtureLibrary:
    return build_fixture_library(tmp_path / "library")


@pytest.fixture
def catalog(db_url: str, library: FixtureLibrary) -> Iterator[Catalog]:
    with open_catalog(db_url, library.root) as opened:
        yield opened


# --- files on disk -----------------------------------------------------------------------


def header_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, parsed here independently of the project."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return dict(json.loads(data[8 : 8 + length]).get("__metadata__") or {})


def sidecar_names(model: Path) -> set[str]:
    """The files beside `model` named `<stem>.<something>`: its sidecars and preview."""
    prefix = model.stem + "."
    return {p.name for p in model.parent.iterdir() if p.name.startswith(prefix) and p != model}


def real_model_files(root: Path) -> list[Path]:
    """Every regular model file under `root`, each once (symlinks are not followed)."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if name.endswith(MODEL_SUFFIXES) and path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def overwrite_keeping_stat(path: Path) -> None:
    """Different bytes of the same length, with the mtime restored: only a read can tell."""
    info = path.stat()
    path.write_bytes(bytes(byte ^ 0xFF for byte in path.read_bytes()))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def move_with_sidecars(model: Path, target: Path) -> None:
    """Move a model and every `<stem>.*` file beside it, renaming them to the new stem."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for name in sidecar_names(model):
        os.rename(model.parent / name, target.parent / (target.stem + name[len(model.stem) :]))
    os.rename(model, target)


def write_named_model(
    path: Path, *, seed: int, model_name: str, version: str, title: str | None = None
) -> str:
    """A model whose `.civitai.info` names it (its header title is `title`, by default the
    same name); returns its SHA-256."""
    metadata = kohya_metadata({"modelspec.title": title or model_name}, seed=seed)
    data = write_safetensors(path, metadata, seed=seed)
    digest = hashlib.sha256(data).hexdigest()
    info = civitai_version(sha256=digest, file_name=path.name, model_name=model_name, name=version)
    write_json(sidecar_path(path, ".civitai.info"), info)
    return digest


def scan_problems(library: FixtureLibrary) -> int:
    """Bad paths the walk itself reports (not files with a header to read)."""
    return sum(1 for bad in library.bad_files.values() if bad.kind != "header")


def still_broken(library: FixtureLibrary) -> int:
    """Files with a broken header: counted failed again by every rescan, not unchanged."""
    return len(library.bad_files) - scan_problems(library)


def counts(summary: ImportSummary) -> dict[str, int]:
    keys = ("new", "updated", "unchanged", "moved", "missing", "failed")
    return {key: getattr(summary, key) for key in keys}


# --- first import --------------------------------------------------------------------------


def _check_model(adapter: Adapter, model: ExpectedModel) -> None:
    """What a correct import must store for one readable model of the fixture library."""
    where = model.key
    assert adapter.ingest_status == "ok", (where, adapter.ingest_error)
    assert adapter.name == model.name, where
    assert adapter.version == model.version_name, where
    if model.base_model is not None:
        assert adapter.base_model == model.base_model, where
    if model.description_contains is not None:
        assert model.description_contains in (adapter.description or ""), where
    tags = {tag.casefold() for tag in adapter.tags or []}
    assert {tag.casefold() for tag in model.tags} <= tags, (where, adapter.tags)
    triggers = {word.casefold() for word in adapter.triggers or []}
    assert {word.casefold() for word in model.triggers} <= triggers, (where, adapter.triggers)
    if model.activation_text is not None:
        assert adapter.activation_text == model.activation_text, where
    if model.preferred_weight is not None:
        assert adapter.preferred_weight == pytest.approx(model.preferred_weight), where
        assert adapter.weight == pytest.approx(model.preferred_weight), where
    else:
        assert adapter.weight == pytest.approx(1.0), where
    if model.nsfw_level is not None:
        assert adapter.nsfw_level == model.nsfw_level, where
    # The computed hash is the truth; a sidecar's claim is kept only when it differs.
    assert adapter.sha256 == model.sha256, where
    assert adapter.primary_file_sha256 == model.sha256, where
    assert adapter.autov2 == model.sha256[:10].upper(), where
    if model.claim_matches:
        assert adapter.declared_sha256 in (None, model.sha256), where
    else:
        assert adapter.declared_sha256 == model.declared_sha256, where
    header = header_metadata(model.path)
    assert adapter.tensor_sha256 == header.get("sshs_model_hash"), where
    assert (adapter.extra or {}).get("safetensors") == header, where
    info = model.path.stat()
    assert adapter.file_size == model.size == info.st_size, where
    assert adapter.file_mtime_ns == info.st_mtime_ns, where
    assert adapter.file_format == "safetensors", where
    assert adapter.real_path == os.path.realpath(model.path), where
    assert adapter.file_path in {str(model.path), *map(str, model.aliases)}, where
    assert adapter.primary_file_local_path == adapter.file_path, where
    # The sidecar state a rescan compares: name → [size, mtime_ns] of each one present.
    names = sidecar_names(model.path)
    assert len(names) == len(model.sidecars), where
    expected_state = {
        name: [
            (model.path.parent / name).stat().st_size,
            (model.path.parent / name).stat().st_mtime_ns,
        ]
        for name in names
    }
    assert adapter.sidecar_state == expected_state, where
    if "preview" in model.sidecars:
        preview = Path(adapter.preview_path or "")
        assert preview.is_file(), where
        assert preview.name in names, where
    else:
        assert adapter.preview_path is None, where
    # Raw sidecars are kept in `extra`, each under its kind.
    for kind, keys in EXTRA_KEYS.items():
        if kind not in model.sidecars:
            continue
        path = next(model.path.parent / n for n in names if _kind_of(n, model.path.stem) == kind)
        if path.name in model.sidecar_errors:
            continue
        raw = json.loads(path.read_text())
        assert any((adapter.extra or {}).get(key) == raw for key in keys), (where, kind)
    if model.sidecar_errors:
        for name, reason in model.sidecar_errors.items():
            assert f"{name}: " in (adapter.ingest_error or ""), (where, adapter.ingest_error)
            assert reason in (adapter.ingest_error or ""), (where, adapter.ingest_error)
    else:
        assert adapter.ingest_error is None, where
    assert adapter.missing_since is None, where


def _kind_of(name: str, stem: str) -> str:
    suffix = name[len(stem) :]
    return {
        ".civitai.info": "civitai_info",
        ".json": "json",
        ".metadata.json": "metadata_json",
        ".cm-info.json": "cm_info",
    }.get(suffix, "preview")


def test_first_import_fills_every_field(catalog: Catalog, library: FixtureLibrary) -> None:
    summary = catalog.run()

    listed = len(library.listed_only)
    assert summary.new == len(library.models) + listed
    assert summary.failed == len(library.bad_files)
    assert (summary.updated, summary.moved, summary.missing, summary.unchanged) == (0, 0, 0, 0)
    for model in library.models.values():
        _check_model(catalog.adapter(model.path), model)

    # The model with every sidecar: each column the issue lists.
    full = library.model("full")
    adapter = catalog.adapter(full.path)
    info = json.loads(sidecar_path(full.path, ".civitai.info").read_text())
    assert adapter.author_username == "sumi_painter"
    assert adapter.sd_version == "SD1"
    assert {"inkwash", "sumi-e"} <= set(adapter.trained_words or [])
    assert adapter.stats == info["stats"]
    assert adapter.download_count == info["stats"]["downloadCount"] == 1234
    assert adapter.published_at == datetime(2024, 2, 3, 4, 5, 6)
    assert adapter.primary_file_name == full.path.name
    assert adapter.primary_file_size_kb == round(full.size / 1024)
    assert adapter.primary_file_download_url == "https://civitai.com/api/download/models/101"
    assert adapter.preview_path == str(sidecar_path(full.path, ".preview.png"))
    assert adapter.tensor_sha256 == kohya_metadata(seed=1)["sshs_model_hash"]

    # AUTOMATIC1111's user edits beat Civitai's data.
    edited = catalog.adapter(library.model("user_edited").path)
    assert edited.description == "My own notes: great for backgrounds."
    assert edited.activation_text == "retro anime, 1990s style"
    assert edited.sd_version == "SDXL"
    assert edited.preferred_weight == pytest.approx(0.6)
    assert edited.weight == pytest.approx(0.6)

    # Header-only data: author and date come from modelspec.
    header_only = catalog.adapter(library.model("header_only").path)
    assert header_only.author_username == "glowsmith"
    assert header_only.published_at == datetime(2023, 11, 14, 22, 13, 20)

    # A sidecar claiming another file's SHA-256: the claim is recorded, the truth is computed.
    wrong = library.model("wrong_claim")
    claimed = catalog.adapter(wrong.path)
    assert not wrong.claim_matches
    assert claimed.declared_sha256 == wrong.declared_sha256 != wrong.sha256
    assert claimed.sha256 == wrong.sha256


# --- rescans -------------------------------------------------------------------------------


def test_rescan_of_unchanged_library_reads_no_model_file(
    catalog: Catalog, library: FixtureLibrary
) -> None:
    first = catalog.run()
    before = {a.id: row_dict(a) for a in catalog.adapters()}
    rewritten = real_model_files(library.root)
    assert len(rewritten) >= len(library.models) + len(library.listed_only)
    for path in rewritten:
        overwrite_keeping_stat(path)

    second = catalog.run()

    assert second.files == first.files
    assert second.unchanged + still_broken(library) == second.files
    assert second.failed == len(library.bad_files)
    assert (second.new, second.updated, second.moved, second.missing) == (0, 0, 0, 0)
    assert second.bytes_hashed == 0
    assert second.changes == []
    after = {a.id: row_dict(a) for a in catalog.adapters()}
    # Had a file been read, its hash, header fields or status would differ now.
    assert after == before


def test_move_and_rename_keep_the_adapter_and_user_fields(
    catalog: Catalog, library: FixtureLibrary, tmp_path: Path
) -> None:
    catalog.run()
    full, edited = library.model("full"), library.model("user_edited")
    moved_to = library.root / "archive" / "2024" / "ink-wash-renamed.safetensors"
    renamed_to = edited.path.with_name("retro-anime-90s.safetensors")
    ids = {}
    for key, model, tags in (("full", full, ["Keep Me"]), ("edited", edited, ["mine", "90s"])):
        ids[key] = catalog.adapter(model.path).id
        catalog.set_user_fields(ids[key], tags=tags, rating=5 if key == "full" else 2)
    before = {key: catalog.adapter(m.path) for key, m in (("full", full), ("edited", edited))}
    total = catalog.count()

    move_with_sidecars(full.path, moved_to)
    move_with_sidecars(edited.path, renamed_to)
    summary = catalog.run()

    assert summary.moved == 2, summary.changes
    assert (summary.new, summary.missing, summary.failed) == (0, 0, len(library.bad_files))
    assert catalog.count() == total
    for key, target in (("full", moved_to), ("edited", renamed_to)):
        adapter = catalog.adapter(target)
        old = before[key]
        assert adapter.id == ids[key]
        assert user_fields(adapter) == user_fields(old)
        assert adapter.ingest_status == "ok"
        assert adapter.file_path == str(target)
        assert adapter.real_path == os.path.realpath(target)
        assert adapter.sha256 == old.sha256
        for name in ("name", "version", "description", "activation_text", "preferred_weight"):
            assert getattr(adapter, name) == getattr(old, name), (key, name)
        assert set(adapter.sidecar_state or {}) == sidecar_names(target)
        assert Path(adapter.preview_path or "").parent == target.parent
        assert Path(adapter.preview_path or "").is_file()
    assert catalog.adapter(moved_to).user_tags == ["keep me"]
    assert catalog.adapter(renamed_to).user_tags == ["mine", "90s"]
    with catalog.factory() as session:
        user_tags = session.scalars(
            select(AdapterTag.tag).where(AdapterTag.adapter_id == ids["full"], AdapterTag.is_user)
        ).all()
    assert list(user_tags) == ["keep me"]


def test_vanished_file_is_marked_missing_then_comes_back(
    catalog: Catalog, library: FixtureLibrary, tmp_path: Path
) -> None:
    catalog.run()
    model = library.model("wrong_claim")
    adapter_id = catalog.adapter(model.path).id
    catalog.set_user_fields(adapter_id, tags=["keeper"])
    kept = user_fields(catalog.adapter(model.path))
    total = catalog.count()
    outside = tmp_path / "outside" / model.path.name
    outside.parent.mkdir()
    os.rename(model.path, outside)

    gone = catalog.run()

    assert gone.missing == 1
    assert {"change": "missing", "path": os.path.realpath(model.path)} in gone.changes
    assert catalog.count() == total
    with catalog.factory() as session:
        missing = session.get(Adapter, adapter_id)
        assert missing is not None
        assert missing.ingest_status == "missing"
        assert missing.missing_since is not None
        assert user_fields(missing) == kept

    os.rename(outside, model.path)
    back = catalog.run()

    assert back.new == 0
    assert back.missing == 0
    returned = catalog.adapter(model.path)
    assert returned.id == adapter_id
    assert returned.ingest_status == "ok"
    assert returned.missing_since is None
    assert user_fields(returned) == kept
    assert catalog.count() == total


def test_changed_sidecar_updates_its_fields_only(catalog: Catalog, library: FixtureLibrary) -> None:
    catalog.run()
    full = library.model("full")
    catalog.set_user_fields(catalog.adapter(full.path).id, tags=["favourite style"])
    before = catalog.adapter(full.path)
    others = {a.id: row_dict(a) for a in catalog.adapters() if a.id != before.id}

    edit_json(
        sidecar_path(full.path, ".civitai.info"),
        description="<p>Second release, <b>retrained</b>.</p>",
        trainedWords=["inkwash", "brush stroke"],
    )
    summary = catalog.run()

    assert summary.updated == 1
    assert summary.new == summary.moved == summary.missing == 0
    assert summary.bytes_hashed == 0
    after = catalog.adapter(full.path)
    assert after.id == before.id
    assert after.description == "Second release, retrained."
    assert "brush stroke" in (after.trained_words or [])
    assert "brush stroke" in (after.triggers or [])
    assert after.extra is not None
    assert after.extra["civitai_info"]["trainedWords"] == ["inkwash", "brush stroke"]
    unchanged = (
        "name",
        "version",
        "base_model",
        "sd_version",
        "author_username",
        "tags",
        "activation_text",
        "preferred_weight",
        "nsfw_level",
        "stats",
        "published_at",
        "primary_file_download_url",
        "sha256",
        "tensor_sha256",
        "file_size",
        "file_mtime_ns",
        "preview_path",
        *USER_FIELDS,
    )
    for name in unchanged:
        assert getattr(after, name) == getattr(before, name), name
    assert {a.id: row_dict(a) for a in catalog.adapters() if a.id != before.id} == others


DELETION_KEPT_FIELDS = (
    "version",
    "description",
    "base_model",
    "trained_words",
    "triggers",
    "activation_text",
    "preferred_weight",
    "nsfw_level",
    "stats",
    "download_count",
    "published_at",
    "primary_file_download_url",
    "primary_file_size_kb",
    *USER_FIELDS,
)


def test_deleting_a_sidecar_never_blanks_the_fields_it_filled(
    catalog: Catalog, library: FixtureLibrary
) -> None:
    catalog.run()
    # paper-cut's .civitai.info is its only source of metadata (its header has none);
    # retro-anime's A1111 .json is the only source of its preferred weight.
    info_only, edited = library.model("info_only"), library.model("user_edited")
    before = {m.key: catalog.adapter(m.path) for m in (info_only, edited)}
    assert before["info_only"].description == "First release."
    assert before["user_edited"].preferred_weight == pytest.approx(0.6)

    sidecar_path(info_only.path, ".civitai.info").unlink()
    sidecar_path(edited.path, ".json").unlink()
    summary = catalog.run()

    assert summary.updated == 2
    assert summary.bytes_hashed == 0
    # Fields another source still fills may fall back to it (retro-anime's Civitai
    # description and trained words); the others keep what the deleted sidecar gave.
    falls_back = {"info_only": set(), "user_edited": {"description", "activation_text", "triggers"}}
    for model in (info_only, edited):
        after = catalog.adapter(model.path)
        old = before[model.key]
        changed = {
            name: (getattr(old, name), getattr(after, name))
            for name in DELETION_KEPT_FIELDS
            if getattr(after, name) != getattr(old, name) and name not in falls_back[model.key]
        }
        assert changed == {}, (model.key, changed)
        for name in falls_back[model.key]:
            assert getattr(after, name), (model.key, name)
        assert set(after.sidecar_state or {}) == sidecar_names(model.path)
    # Once the deletions are recorded, the library is unchanged again.
    again = catalog.run()
    assert again.unchanged + still_broken(library) == again.files


def test_deleting_the_only_sidecar_keeps_the_name_it_gave(
    catalog: Catalog, library: FixtureLibrary
) -> None:
    """The file stem is what the importer falls back on when nothing names a model: missing
    data, which must not replace a name a sidecar gave."""
    catalog.run()
    info_only = library.model("info_only")
    assert catalog.adapter(info_only.path).name == "Paper Cut"

    sidecar_path(info_only.path, ".civitai.info").unlink()
    catalog.run()

    assert catalog.adapter(info_only.path).name == "Paper Cut"


def test_sidecar_only_change_does_not_open_a_header_without_metadata(
    catalog: Catalog, library: FixtureLibrary
) -> None:
    """Only sidecars changed: they are merged with the header stored last time, and the
    model file is not opened, even when that stored header held no metadata at all."""
    catalog.run()
    info_only = library.model("info_only")
    assert header_metadata(info_only.path) == {}
    overwrite_keeping_stat(info_only.path)  # unreadable now: only a read can tell

    edit_json(sidecar_path(info_only.path, ".civitai.info"), description="<p>Dev 2 notes</p>")
    summary = catalog.run()

    adapter = catalog.adapter(info_only.path)
    assert not [f for f in summary.failures if Path(f["path"]).name == info_only.path.name]
    assert adapter.ingest_status == "ok", adapter.ingest_error
    assert adapter.ingest_error is None
    assert adapter.description == "Dev 2 notes"
    assert adapter.sha256 == info_only.sha256


def test_imports_never_overwrite_user_fields(catalog: Catalog, library: FixtureLibrary) -> None:
    catalog.run()
    adapters = catalog.adapters()
    for index, adapter in enumerate(adapters):
        catalog.set_user_fields(
            adapter.id,
            tags=[f"user-{index}"],
            is_favorite=index % 2 == 0,
            rating=index % 5 + 1,
            notes=f"note {index}",
            weight=round(0.1 + index / 100, 2),
            ordinal=100 + index,
        )
    # The user turns off comfy's favourite and clears the notes the sidecars gave.
    comfy = catalog.adapter(library.model("comfyui").path)
    with catalog.factory() as session:
        row = session.get(Adapter, comfy.id)
        assert row is not None
        catalog_service.set_favorite(row, False)
        row.notes = None
        catalog_service.deactivate(row)
        session.commit()
    expected = {a.id: user_fields(a) for a in catalog.adapters()}

    # Every source of a user-field hint changes, and a model file is rewritten.
    edited = library.model("user_edited")
    edit_json(sidecar_path(edited.path, ".json"), **{"preferred weight": 0.9, "notes": "new"})
    comfy_sidecar = sidecar_path(library.model("comfyui").path, ".metadata.json")
    edit_json(comfy_sidecar, favorite=True, notes="sidecar notes", usage_tips='{"strength": 1.2}')
    header_only = library.model("header_only").path
    write_safetensors(header_only, kohya_metadata({"modelspec.title": "Neon Glow 2"}, seed=22))
    catalog.run(dry_run=True)
    summary = catalog.run()

    assert summary.updated == 3
    after = {a.id: user_fields(a) for a in catalog.adapters()}
    assert after == expected
    assert catalog.adapter(edited.path).preferred_weight == pytest.approx(0.9)
    assert catalog.adapter(header_only).name == "Neon Glow 2"
    # Every model file touched: all are hashed and re-read again, user fields stay.
    for path in real_model_files(library.root):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    touched = catalog.run()
    assert touched.updated + touched.failed - scan_problems(library) == len(after)
    assert {a.id: user_fields(a) for a in catalog.adapters()} == expected


# --- the unique (name, version) rule -------------------------------------------------------


def _versions(catalog: Catalog, root: Path) -> dict[str, str | None]:
    return {str(Path(a.file_path).relative_to(root)): a.version for a in catalog.adapters()}


def test_same_name_and_version_both_import_deterministically(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    root = tmp_path / "twins"
    first = write_named_model(
        root / "a" / "twin.safetensors", seed=31, model_name="Twin", version="v1"
    )
    second = write_named_model(
        root / "b" / "twin.safetensors", seed=32, model_name="Twin", version="v1"
    )
    results = []
    for url in (db_url, fresh_url(request, db_url, tmp_path)):
        with open_catalog(url, root) as catalog:
            summary = catalog.run()
            assert (summary.new, summary.failed) == (2, 0), summary.failures
            assert {a.name for a in catalog.adapters()} == {"Twin"}
            results.append(_versions(catalog, root))
    versions = sorted(v or "" for v in results[0].values())
    assert versions[0] == "v1"
    assert versions[1].startswith("v1 ") and versions[1] != "v1"
    assert any(digest[:8] in versions[1] for digest in (first, second))
    assert results[0] == results[1]


def test_identical_copies_of_a_model_all_import(db_url: str, tmp_path: Path) -> None:
    """The same file (same bytes and sidecar) kept in several folders: each copy is a file
    of the library, so each imports, whatever the unique (name, version) rule says."""
    root = tmp_path / "copies"
    write_named_model(root / "a" / "twin.safetensors", seed=33, model_name="Twin", version="v1")
    for folder in ("b", "c", "d"):
        shutil.copytree(root / "a", root / folder)
    with open_catalog(db_url, root) as catalog:
        summary = catalog.run()

        assert summary.failed == 0, summary.failures
        assert summary.new == 4
        adapters = catalog.adapters()
        assert len(adapters) == 4
        assert len({(a.name, a.version) for a in adapters}) == 4


def test_disambiguated_version_survives_a_sidecar_edit(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A rescan gives the version a fresh import of the same library would give."""
    root = tmp_path / "twins"
    paths = [root / folder / "twin.safetensors" for folder in ("a", "b")]
    for seed, path in enumerate(paths, start=41):
        write_named_model(path, seed=seed, model_name="Twin", version="v1")
    with open_catalog(db_url, root) as catalog:
        catalog.run()
        imported = _versions(catalog, root)
        for path in paths:
            info = sidecar_path(path, ".civitai.info")
            stats = json.loads(info.read_text())["stats"]
            edit_json(info, stats={**stats, "downloadCount": stats["downloadCount"] + 1})
        summary = catalog.run()
        assert summary.updated == 2
        rescanned = _versions(catalog, root)
    with open_catalog(fresh_url(request, db_url, tmp_path), root) as fresh:
        fresh.run()
        from_scratch = _versions(fresh, root)
    assert rescanned == from_scratch == imported


# --- bad files, symlinks, formats ----------------------------------------------------------


def test_bad_files_are_recorded_with_a_reason_and_the_import_goes_on(
    catalog: Catalog, library: FixtureLibrary
) -> None:
    summary = catalog.run()

    reasons = {failure["path"]: failure["reason"] for failure in summary.failures}
    assert len(reasons) == len(summary.failures) == len(library.bad_files)
    for bad in library.bad_files.values():
        reason = reasons.get(str(bad.path))
        assert reason is not None, f"{bad.key}: not reported"
        if bad.kind == "header":
            assert bad.reason in reason, (bad.key, reason)
            adapter = catalog.adapter(bad.path)
            assert adapter.ingest_status == "error"
            assert bad.reason in (adapter.ingest_error or "")
        else:
            accepted = SCAN_REASONS[bad.kind]
            assert any(words in reason.lower() for words in accepted), (bad.key, reason)
            assert not [a for a in catalog.adapters() if a.file_path == str(bad.path)]
    # Everything readable imported anyway, sidecar errors included (reported, not fatal).
    for model in library.models.values():
        assert catalog.adapter(model.path).ingest_status == "ok", model.key
    details = {change["path"]: change.get("detail", "") for change in summary.changes}
    for key in ("bad_sidecar", "truncated_sidecar"):
        model = library.model(key)
        adapter = catalog.adapter(model.path)
        for name, reason in model.sidecar_errors.items():
            assert f"{name}: " in (adapter.ingest_error or "")
            assert reason in (adapter.ingest_error or "")
            assert reason in details[adapter.file_path]
    # A rescan does not turn the recorded failures into anything else.
    again = catalog.run()
    assert (again.new, again.updated, again.moved, again.missing) == (0, 0, 0, 0)


def test_symlinks_are_followed_once_and_pickles_are_listed_not_hashed(
    catalog: Catalog, library: FixtureLibrary
) -> None:
    summary = catalog.run()

    adapters = catalog.adapters()
    real_paths = [a.real_path for a in adapters]
    assert len(real_paths) == len(set(real_paths))
    assert library.symlinked_dirs and library.directory_loops
    for key in ("header_only", "info_only"):
        model = library.model(key)
        assert model.aliases
        matching = [a for a in adapters if a.sha256 == model.sha256]
        assert len(matching) == 1, key
        assert matching[0].real_path == os.path.realpath(model.path)
    for loop in library.directory_loops:
        assert not [f for f in summary.failures if f["path"].startswith(str(loop))]
    for path in library.listed_only:
        adapter = catalog.adapter(path)
        assert adapter.file_format == path.suffix.lstrip(".")
        assert adapter.sha256 is None
        assert adapter.autov2 is None
        assert adapter.file_size == path.stat().st_size
    # Only regular .safetensors files were read, each once.
    hashed = [p for p in real_model_files(library.root) if p.suffix == ".safetensors"]
    assert summary.bytes_hashed == sum(p.stat().st_size for p in hashed)
    readable = len(library.models) + len(library.listed_only)
    assert sum(1 for a in adapters if a.ingest_status == "ok") == readable


def test_file_symlink_gets_the_real_files_sidecars_in_any_walk_order(
    sqlite_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A model reached through a file symlink and directly is one adapter, and its metadata
    does not depend on which path the walk meets first."""
    root = tmp_path / "library"
    real = root / "a1111" / "neon.safetensors"
    write_named_model(real, seed=51, model_name="Neon From Civitai", version="v7", title="hdr")
    (root / "comfy").mkdir()
    (root / "comfy" / "neon-link.safetensors").symlink_to(real)
    seen = []
    for index, order in enumerate((["a1111", "comfy"], ["comfy", "a1111"])):
        url = sqlite_url if index == 0 else fresh_url(request, sqlite_url, tmp_path)
        with open_catalog(url, root) as catalog:
            summary = catalog.run([root / name for name in order])
            assert summary.new == 1
            adapter = catalog.adapter(real)
            seen.append((adapter.name, adapter.version, sorted(adapter.sidecar_state or {})))
    assert seen[0] == ("Neon From Civitai", "v7", ["neon.civitai.info"])
    assert seen[1] == seen[0]


# --- dry runs and concurrent imports ---------------------------------------------------------


def test_dry_run_changes_nothing_but_reports_what_would_change(
    catalog: Catalog, library: FixtureLibrary, tmp_path: Path
) -> None:
    empty = catalog.snapshot()
    dry = catalog.run(dry_run=True)

    assert dry.dry_run is True
    assert dry.new == len(library.models) + len(library.listed_only)
    assert dry.failed == len(library.bad_files)
    assert sum(1 for change in dry.changes if change["change"] == "new") == dry.new
    assert catalog.snapshot() == empty
    assert catalog.count() == 0

    real = catalog.run()
    assert counts(real) == counts(dry)
    # Now one file of each kind of change: moved, updated, missing and new.
    wrong, full = library.model("wrong_claim"), library.model("full")
    move_with_sidecars(wrong.path, library.root / "moved" / "claimed.safetensors")
    edit_json(sidecar_path(full.path, ".civitai.info"), description="<p>Changed</p>")
    private = library.model("nothing_on_civitai").path
    os.rename(private, tmp_path / private.name)
    added = library.root / "new" / "fresh.safetensors"
    write_named_model(added, seed=61, model_name="Fresh", version="v1")
    before = catalog.snapshot()

    dry = catalog.run(dry_run=True)

    assert (dry.new, dry.updated, dry.moved, dry.missing) == (1, 1, 1, 1)
    kinds = {change["change"]: change["path"] for change in dry.changes}
    assert kinds == {
        "new": str(added),
        "updated": str(full.path),
        "moved": str(library.root / "moved" / "claimed.safetensors"),
        "missing": os.path.realpath(private),
    }
    assert catalog.snapshot() == before
    applied = catalog.run()
    assert counts(applied) == counts(dry)


def _one_adapter_per_file(catalog: Catalog, library: FixtureLibrary) -> None:
    adapters = catalog.adapters()
    expected = len(library.models) + len(library.listed_only)
    expected += sum(1 for bad in library.bad_files.values() if bad.kind == "header")
    assert len(adapters) == expected
    assert len({a.real_path for a in adapters}) == len(adapters)
    assert len({(a.name, a.version) for a in adapters}) == len(adapters)
    for model in library.models.values():
        assert catalog.adapter(model.path).sha256 == model.sha256


def test_two_imports_at_once_in_threads(catalog: Catalog, library: FixtureLibrary) -> None:
    barrier = threading.Barrier(2)
    summaries: list[ImportSummary] = []
    errors: list[BaseException] = []

    def run() -> None:
        engine = make_engine(catalog.settings)
        try:
            importer = Importer(catalog.settings, make_session_factory(engine), echo=lambda _: None)
            barrier.wait()
            summaries.append(importer.run([library.root]))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(summaries) == 2
    # One did the work; the other waited for the lock, then found it done.
    assert sorted(s.new for s in summaries) == [0, len(library.models) + len(library.listed_only)]
    assert sum(s.moved + s.missing for s in summaries) == 0
    _one_adapter_per_file(catalog, library)


# --- the command line --------------------------------------------------------------------------


def test_two_cli_imports_at_once_on_postgresql(
    pg_url: str, cli_env: dict[str, str], library: FixtureLibrary, tmp_path: Path
) -> None:
    migrate(pg_url)
    env = {**cli_env, "DATABASE_URL": pg_url, "LORA_ROOTS": str(library.root)}
    argv = ["lora-manager", "import", str(library.root), "--json"]
    processes = [
        subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]

    for process, (_stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    assert sorted(s["new"] for s in summaries) == [
        0,
        len(library.models) + len(library.listed_only),
    ]
    with open_catalog(pg_url, library.root, migrated=True) as catalog:
        _one_adapter_per_file(catalog, library)


def test_cli_import_prints_a_json_summary_and_dry_run_changes_nothing(
    sqlite_url: str, cli_env: dict[str, str], library: FixtureLibrary, tmp_path: Path
) -> None:
    readable = len(library.models) + len(library.listed_only)
    cli_env = {**cli_env, "LORA_ROOTS": str(library.root)}
    dry = import_cli([str(library.root), "--dry-run", "--json"], cli_env, sqlite_url, tmp_path)
    assert dry.returncode == 0, dry.stderr
    dry_summary = json.loads(dry.stdout)
    assert dry_summary["dry_run"] is True
    assert dry_summary["new"] == readable
    with open_catalog(sqlite_url, library.root, migrated=True) as catalog:
        assert catalog.count() == 0

    done = import_cli([str(library.root), "--json"], cli_env, sqlite_url, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    for key in ("new", "updated", "unchanged", "moved", "missing", "failed", "bytes_hashed"):
        assert isinstance(summary[key], int), key
    assert summary["dry_run"] is False
    assert summary["new"] == readable
    assert summary["failed"] == len(library.bad_files)
    assert {f["path"] for f in summary["failures"]} == {
        str(b.path) for b in library.bad_files.values()
    }

    again = json.loads(
        import_cli([str(library.root), "--json"], cli_env, sqlite_url, tmp_path).stdout
    )
    assert again["unchanged"] + still_broken(library) == again["files"] == summary["files"]
    assert again["failures"] == summary["failures"]  # still broken: listed again, same reason
    assert again["bytes_hashed"] == 0
    with open_catalog(sqlite_url, library.root, migrated=True) as catalog:
        _one_adapter_per_file(catalog, library)


def test_cli_import_of_a_missing_folder_fails_clearly(
    sqlite_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder"
    env = {**cli_env, "LORA_ROOTS": str(tmp_path)}
    result = import_cli([str(missing), "--json"], env, sqlite_url, tmp_path)

    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert "not a folder" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout.strip() == ""
