"""The importer's pure readers: safetensors headers, hashing, sidecar discovery, reading and
the precedence rule that merges them. No database here."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import struct
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lora_manager.ingest.hashing import (
    HASH_BLOCK_SIZE,
    autov2,
    hash_files,
    normalise_hash,
    sha256_file,
)
from lora_manager.ingest.safetensors import (
    MAX_HEADER_BYTES,
    TAG_FREQUENCY_LIMIT,
    HeaderInfo,
    SafetensorsError,
    describe_header,
    human_size,
    parse_header_stream,
    read_header,
)
from lora_manager.ingest.sidecars import (
    AdapterMetadata,
    SidecarData,
    SidecarFiles,
    find_sidecars,
    html_to_text,
    merge_metadata,
    read_sidecars,
)
from lora_manager.ingest.sidecars import base as sidecars_module
from tests.support.library import (
    a1111_metadata,
    build_bulk_library,
    build_fixture_library,
    civitai_model,
    civitai_version,
    cm_info,
    comfyui_metadata,
    kohya_metadata,
    png_bytes,
    safetensors_bytes,
    sidecar_path,
    tensor_payload,
    write_json,
    write_raw_header,
    write_safetensors,
)

SHA_A = "a" * 64
SHA_B = "b" * 64
GIB = 1024**3


# --- read_header -------------------------------------------------------------------------


def test_read_header_returns_metadata_and_shape(tmp_path: Path) -> None:
    metadata = kohya_metadata(seed=3)
    path = tmp_path / "m.safetensors"
    data = write_safetensors(path, metadata, tensors=4, tensor_bytes=32, seed=3)

    header = read_header(path)

    assert header.metadata == metadata
    assert header.tensor_count == 4
    assert header.file_size == len(data)
    assert header.header_length == struct.unpack("<Q", data[:8])[0]
    assert header.data_size == 4 * 32
    assert not header.truncated


def test_read_header_without_metadata_or_with_null_metadata(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    write_safetensors(plain, None)
    assert read_header(plain).metadata == {}
    null = tmp_path / "null.safetensors"
    write_raw_header(null, b'{"__metadata__": null}')
    assert read_header(null).metadata == {}


def test_non_string_metadata_values_are_json_encoded(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    header = {"__metadata__": {"dim": 32, "args": {"a": [1, 2]}, "ok": "yes", "nothing": None}}
    write_raw_header(path, json.dumps(header).encode())
    assert read_header(path).metadata == {
        "dim": "32",
        "args": '{"a": [1, 2]}',
        "ok": "yes",
        "nothing": "null",
    }


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"\x01\x00\x00\x00\x00", "file too short for a header (5 bytes)"),
        (
            struct.pack("<Q", 123456) + b"{}" * 446,
            "header length 123456 is beyond the file size 900",
        ),
        (struct.pack("<Q", 10 * GIB) + b"{}", "header length 10 GB (10737418240 bytes) exceeds"),
        (struct.pack("<Q", 2**60) + b"{}", "exceeds the 100 MB limit"),
        (struct.pack("<Q", 4) + b"\xff{}}", "header is not valid UTF-8 (byte 0xff at offset 0)"),
        (struct.pack("<Q", 5) + b'{"a":', "header is not valid JSON: Expecting value"),
        (struct.pack("<Q", 0), "header is not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "header is not a JSON object (found a list)"),
        (struct.pack("<Q", 3) + b'"x"', "header is not a JSON object (found a string)"),
        (struct.pack("<Q", 19) + b'{"__metadata__": 1}', "__metadata__ is not an object"),
        (struct.pack("<Q", 4096) + b"[" * 4096, "header is not valid JSON"),
    ],
    ids=[
        "empty",
        "short",
        "beyond",
        "10GB",
        "2**60",
        "utf8",
        "json",
        "zero-length",
        "list",
        "string",
        "metadata",
        "deep",
    ],
)
def test_broken_headers_raise_precise_reasons(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsError) as caught:
        read_header(path)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_header_length_bounds_are_exact(tmp_path: Path) -> None:
    header = b"{}" + b" " * 6
    exact = tmp_path / "exact.safetensors"
    exact.write_bytes(struct.pack("<Q", len(header)) + header)
    assert read_header(exact).tensor_count == 0
    one_over = tmp_path / "over.safetensors"
    one_over.write_bytes(struct.pack("<Q", len(header) + 1) + header)
    with pytest.raises(SafetensorsError, match="beyond the file size 16"):
        read_header(one_over)


def test_header_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    # A sparse file large enough that only the size limit can refuse it.
    path = tmp_path / "big.safetensors"
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", MAX_HEADER_BYTES + 1))
        handle.truncate(MAX_HEADER_BYTES + 100)
    stream = _CountingReader(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"\0" * 100)
    with pytest.raises(SafetensorsError, match="exceeds the 100 MB limit"):
        parse_header_stream(stream, MAX_HEADER_BYTES + 100)
    assert stream.bytes_read == 8
    with pytest.raises(SafetensorsError, match="exceeds"):
        read_header(path)


class _CountingReader:
    """A stream over `data` that counts the bytes handed out."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)
        self.bytes_read = 0

    def readinto(self, buffer: memoryview) -> int:
        count = self._stream.readinto(buffer)
        self.bytes_read += count
        return count


def test_parse_reads_exactly_the_header_and_no_tensor_byte() -> None:
    data = safetensors_bytes(kohya_metadata(), tensors=8, tensor_bytes=4096)
    stream = _CountingReader(data)
    header = parse_header_stream(stream, len(data))
    assert stream.bytes_read == 8 + header.header_length
    assert len(data) - stream.bytes_read == 8 * 4096  # every tensor byte left unread


def _bytes_read_by_this_process() -> int:
    with open("/proc/self/io") as handle:
        return int(next(line for line in handle if line.startswith("rchar")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_read_header_reads_no_byte_beyond_the_header(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"k": "v"}, tensors=2, tensor_bytes=256 * 1024)
    before = _bytes_read_by_this_process()
    overhead = _bytes_read_by_this_process() - before  # reading /proc/self/io itself
    before = _bytes_read_by_this_process()
    header = read_header(path)
    read = _bytes_read_by_this_process() - before - overhead
    # A buffered open would have read a whole block (4 KiB or more) of tensor bytes.
    assert 8 + header.header_length <= read < 8 + header.header_length + 512


def test_read_header_on_a_4_gib_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    metadata = {"modelspec.title": "huge"}
    write_safetensors(path, metadata)
    with path.open("r+b") as handle:
        handle.truncate(4 * GIB)  # a hole: reading it all would take seconds and 4 GiB
    header = read_header(path)
    assert header.metadata == metadata
    assert header.file_size == 4 * GIB
    assert not header.truncated


def test_truncated_download_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "partial.safetensors"
    data = write_safetensors(path, {}, tensors=2, tensor_bytes=64)
    path.write_bytes(data[:-10])
    header = read_header(path)
    assert header.truncated
    assert header.problem == "truncated: header declares 128 bytes of tensor data, file has 118"
    path.write_bytes(data)
    assert read_header(path).problem is None


@pytest.mark.parametrize("kind", ["directory", "dangling", "loop"])
def test_unopenable_paths_raise_oserror(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.safetensors"
    if kind == "directory":
        path.mkdir()
        expected = errno.EISDIR
    elif kind == "dangling":
        path.symlink_to(tmp_path / "gone.safetensors")
        expected = errno.ENOENT
    else:
        other = tmp_path / "y.safetensors"
        path.symlink_to(other)
        other.symlink_to(path)
        expected = errno.ELOOP
    with pytest.raises(OSError) as caught:
        read_header(path)
    assert caught.value.errno == expected
    assert not isinstance(caught.value, SafetensorsError)


def test_human_size() -> None:
    assert human_size(MAX_HEADER_BYTES) == "100 MB"
    assert human_size(10 * GIB) == "10 GB"
    assert human_size(2**60) == "1 EB"
    assert human_size(1536) == "1.5 KB"
    assert human_size(900) == "900 bytes"


# --- describe_header ---------------------------------------------------------------------


def test_describe_kohya_header() -> None:
    metadata = kohya_metadata(
        {
            "modelspec.author": "painter",
            "modelspec.description": "Ink wash.",
            "modelspec.trigger_phrase": "inkwash, ink style, inkwash ,",
            "modelspec.tags": "style,Ink",
            "modelspec.license": "CreativeML OpenRAIL-M",
        },
        seed=5,
    )
    info = describe_header(metadata)
    assert info.title == "inkwash-style"
    assert info.description == "Ink wash."
    assert info.author == "painter"
    assert info.base_model == "SD 1.5"
    assert info.trigger_words == ["inkwash", "ink style"]
    # modelspec tags first, then caption tags by frequency over both datasets
    assert info.tags[:2] == ["style", "Ink"]
    assert info.tags[2:6] == ["inkwash", "monochrome", "portrait", "landscape"]
    assert info.tensor_sha256 == hashlib.sha256(tensor_payload(seed=5)).hexdigest()
    assert info.training["network_module"] == "networks.lora"
    assert info.training["network_dim"] == "32"
    assert info.training["optimizer"] == "bitsandbytes.optim.adamw.AdamW8bit"
    assert info.training["sd_model_name"] == "v1-5-pruned-emaonly.safetensors"
    assert "noise_offset" not in info.training  # kohya's "None"
    assert "tag_frequency" not in info.training
    assert info.published_at == datetime(2023, 11, 14, 22, 13, 20)
    assert info.resolution == "512x512"
    assert info.license == "CreativeML OpenRAIL-M"
    assert info.raw == metadata


@pytest.mark.parametrize(
    ("metadata", "label"),
    [
        ({"ss_base_model_version": "sd_v1"}, "SD 1.5"),
        ({"ss_base_model_version": "sd_v2"}, "SD 2"),
        ({"ss_base_model_version": "sd_v2_v"}, "SD 2"),
        ({"ss_base_model_version": "sdxl_base_v1-0"}, "SDXL 1.0"),
        ({"ss_base_model_version": "flux1"}, "Flux.1"),
        ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "SDXL 1.0"),
        ({"modelspec.architecture": "flux-1-dev/lora"}, "Flux.1 D"),
        ({"modelspec.architecture": "flux-1-schnell/lora"}, "Flux.1 S"),
        ({"modelspec.architecture": "stable-diffusion-v1/lora"}, "SD 1.5"),
        ({"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "SD 2"),
        ({"modelspec.architecture": "stable-diffusion-3.5-large/lora"}, "SD 3.5 Large"),
        ({"ss_v2": "True"}, "SD 2"),
        ({"ss_v2": "False"}, None),
        ({"ss_base_model_version": "my-own-base"}, None),
        (
            {"ss_base_model_version": "flux1", "modelspec.architecture": "flux-1-dev/lora"},
            "Flux.1 D",
        ),
    ],
)
def test_base_model_labels(metadata: dict[str, str], label: str | None) -> None:
    assert describe_header(metadata).base_model == label


def test_title_falls_back_to_output_name() -> None:
    assert describe_header({"ss_output_name": "my_lora"}).title == "my_lora"
    assert describe_header({"ss_output_name": "a", "modelspec.title": "B"}).title == "B"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"sshs_model_hash": SHA_A.upper()}, SHA_A),
        ({"modelspec.hash_sha256": "0x" + SHA_B.upper()}, SHA_B),
        ({"sshs_model_hash": "xyz", "modelspec.hash_sha256": "0x" + SHA_B}, SHA_B),
        ({"sshs_model_hash": "abc123"}, None),
        ({"modelspec.hash_sha256": "0x" + "g" * 64}, None),
    ],
)
def test_tensor_sha256(metadata: dict[str, str], expected: str | None) -> None:
    assert describe_header(metadata).tensor_sha256 == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"modelspec.date": "2024-05-06"}, datetime(2024, 5, 6)),
        ({"modelspec.date": "2024-05-06T10:00:00+02:00"}, datetime(2024, 5, 6, 8)),
        ({"modelspec.date": "2024-05-06T10:00:00Z"}, datetime(2024, 5, 6, 10)),
        ({"ss_training_finished_at": "1700000000.5"}, datetime(2023, 11, 14, 22, 13, 20, 500000)),
        ({"ss_training_started_at": "1700000000"}, datetime(2023, 11, 14, 22, 13, 20)),
        (
            {"modelspec.date": "soon", "ss_training_finished_at": "1e400"},
            None,
        ),
        (
            {"modelspec.date": "soon", "ss_training_started_at": "1700000000"},
            datetime(2023, 11, 14, 22, 13, 20),
        ),
        ({"ss_training_finished_at": "nan"}, None),
        ({"ss_training_finished_at": "-1e30"}, None),
    ],
)
def test_published_at(metadata: dict[str, str], expected: datetime | None) -> None:
    assert describe_header(metadata).published_at == expected


def test_tag_frequency_sums_datasets_and_is_limited() -> None:
    frequency = {
        "a": {f"tag{i:02d}": i for i in range(30)},
        "b": {"tag00": 100, " tag01 ": 1, "bad": "many", "neg": True},
        "c": "not a dataset",
    }
    tags = describe_header({"ss_tag_frequency": json.dumps(frequency)}).tags
    assert len(tags) == TAG_FREQUENCY_LIMIT
    assert tags[0] == "tag00"  # 0 + 100
    assert tags[1:3] == ["tag29", "tag28"]
    assert "bad" not in tags and "neg" not in tags


def test_describe_header_never_raises_on_garbage() -> None:
    garbage: dict[str, Any] = {
        "ss_tag_frequency": "{not json",
        "ss_training_finished_at": "yesterday",
        "modelspec.date": "the 5th",
        "ss_resolution": "big",
        "sshs_model_hash": 12,
        "modelspec.title": ["a"],
        "modelspec.trigger_phrase": None,
        "modelspec.tags": "",
        "ss_base_model_version": {"x": 1},
        "ss_network_dim": "None",
    }
    info = describe_header(garbage)
    # training keeps raw strings; every derived field is empty
    assert info == HeaderInfo(training={"resolution": "big"}, raw=garbage)


def test_resolution_forms() -> None:
    assert describe_header({"ss_resolution": "(1024, 768)"}).resolution == "1024x768"
    assert describe_header({"ss_resolution": "768"}).resolution == "768x768"
    assert describe_header({"modelspec.resolution": "512x512"}).resolution == "512x512"


# --- hashing -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 7, 21, 22, 1000])
def test_sha256_file_matches_hashlib_and_reports_progress(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    calls: list[int] = []
    digest = sha256_file(path, progress=calls.append, block_size=7)
    assert digest == hashlib.sha256(data).hexdigest()
    assert sum(calls) == size
    assert len(calls) == -(-size // 7)
    assert all(count <= 7 for count in calls)


def test_sha256_file_default_block_and_missing_file(tmp_path: Path) -> None:
    data = os.urandom(HASH_BLOCK_SIZE + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    calls: list[int] = []
    assert sha256_file(path, progress=calls.append) == hashlib.sha256(data).hexdigest()
    assert calls == [HASH_BLOCK_SIZE, 5]
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "missing.bin")


def test_autov2() -> None:
    sha = "0123456789abcdef" * 4
    assert autov2(sha) == "0123456789"
    assert autov2("0x" + sha.upper()) == "0123456789"


def test_hash_files_in_parallel_with_unreadable_paths(tmp_path: Path) -> None:
    contents = {tmp_path / f"m{i}.bin": os.urandom(1000 + i) for i in range(12)}
    for path, data in contents.items():
        path.write_bytes(data)
    missing = tmp_path / "missing.bin"
    folder = tmp_path / "folder.bin"
    folder.mkdir()
    lock = threading.Lock()
    total = 0
    threads: set[int] = set()

    def progress(count: int) -> None:
        nonlocal total
        with lock:
            total += count
            threads.add(threading.get_ident())

    paths = [*contents, missing, folder]
    results = dict(hash_files(paths, workers=4, progress=progress))

    assert set(results) == set(paths)
    for path, data in contents.items():
        assert results[path] == hashlib.sha256(data).hexdigest()
    assert isinstance(results[missing], FileNotFoundError)
    assert isinstance(results[folder], IsADirectoryError)
    assert total == sum(len(data) for data in contents.values())
    assert threading.get_ident() not in threads  # called from the workers


def test_hash_files_empty_and_early_close(tmp_path: Path) -> None:
    assert list(hash_files([])) == []
    paths = []
    for index in range(20):
        path = tmp_path / f"{index}.bin"
        path.write_bytes(bytes([index]) * 100)
        paths.append(path)
    iterator = hash_files(paths, workers=2)
    first_path, first_hash = next(iterator)
    iterator.close()
    assert first_hash == hashlib.sha256(first_path.read_bytes()).hexdigest()


# --- sidecar discovery -------------------------------------------------------------------


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"{}")


def test_find_sidecars_every_kind_with_and_without_siblings(tmp_path: Path) -> None:
    model = tmp_path / "ink.v2.safetensors"
    _touch(
        tmp_path,
        model.name,
        "ink.v2.civitai.info",
        "ink.v2.json",
        "ink.v2.metadata.json",
        "ink.v2.cm-info.json",
        "ink.v2.png",
        "ink.v2.preview.webp",
        "ink.civitai.info",  # another model's (stem "ink")
    )
    found = find_sidecars(model)
    assert found == SidecarFiles(
        model_path=model,
        civitai_info=tmp_path / "ink.v2.civitai.info",
        json=tmp_path / "ink.v2.json",
        metadata_json=tmp_path / "ink.v2.metadata.json",
        cm_info=tmp_path / "ink.v2.cm-info.json",
        preview=tmp_path / "ink.v2.preview.webp",
    )
    assert find_sidecars(model, set(os.listdir(tmp_path))) == found
    assert found.paths() == [
        tmp_path / "ink.v2.civitai.info",
        tmp_path / "ink.v2.json",
        tmp_path / "ink.v2.metadata.json",
        tmp_path / "ink.v2.cm-info.json",
        tmp_path / "ink.v2.preview.webp",
    ]


@pytest.mark.parametrize(
    ("names", "preview"),
    [
        (["m.png", "m.preview.png"], "m.preview.png"),
        (["m.png", "m.preview.mp4"], "m.preview.mp4"),
        (["m.webp", "m.jpg"], "m.jpg"),
        (["m.preview.jpeg", "m.preview.jpg"], "m.preview.jpg"),
        (["m.gif"], None),
        ([], None),
    ],
)
def test_preview_preference(tmp_path: Path, names: list[str], preview: str | None) -> None:
    _touch(tmp_path, *names)
    found = find_sidecars(tmp_path / "m.safetensors")
    assert found.preview == (tmp_path / preview if preview else None)


def test_find_sidecars_with_siblings_makes_no_system_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object) -> bool:
        raise AssertionError("a system call despite siblings")

    monkeypatch.setattr(os.path, "lexists", forbidden)
    model = tmp_path / "nowhere" / "m.safetensors"
    found = find_sidecars(model, {"m.json", "m.preview.png", "other.json"})
    assert found.json == model.with_name("m.json")
    assert found.preview == model.with_name("m.preview.png")
    assert found.civitai_info is None
    # a dict of neighbours works as well as a set
    assert find_sidecars(model, {"m.json": (1, 2)}).json == model.with_name("m.json")


def test_no_sidecars(tmp_path: Path) -> None:
    found = find_sidecars(tmp_path / "m.safetensors")
    assert found.paths() == []
    assert read_sidecars(found) == SidecarData()


# --- sidecar reading ---------------------------------------------------------------------


def _files(model: Path) -> SidecarData:
    return read_sidecars(find_sidecars(model))


def test_json_sidecar_is_classified_by_content(tmp_path: Path) -> None:
    version = civitai_version(sha256=SHA_A, file_name="m.safetensors")
    cases = {
        "model": civitai_model([version]),
        "version": version,
        "user": a1111_metadata(notes="mine"),
    }
    for kind, content in cases.items():
        model = tmp_path / kind / "m.safetensors"
        write_json(sidecar_path(model, ".json"), content)
        data = _files(model)
        assert (data.civitai_model, data.civitai_version, data.a1111) == (
            content if kind == "model" else None,
            content if kind == "version" else None,
            content if kind == "user" else None,
        )
        assert data.errors == {}


def test_empty_civitai_info_is_empty_not_an_error(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    write_json(sidecar_path(model, ".civitai.info"), {})
    data = _files(model)
    assert data.civitai_info == {}
    assert data.errors == {}
    merged = merge_metadata(None, data, file_name=model.name)
    assert merged.name == ""  # `{}` names nothing
    assert merged.extra == {"civitai_info": {}}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            b'{\n  "id": 1,\n  "name" "x"\n}',
            "invalid JSON at line 3 column 10: Expecting ':' delimiter",
        ),
        (b'{"id": 1, "name": "Ink', "truncated JSON"),
        (b'{"id": 1, "files": [', "truncated JSON"),
        (b'{"id": 1,', "truncated JSON"),
        (b"   \n", "truncated JSON"),
        (b"", "empty file (0 bytes)"),
        (b"[1, 2]", "not a JSON object (found a list)"),
        (b'"text"', "not a JSON object (found str)"),
        (b'{"name": "\xff"}', "not valid UTF-8 (byte 0xff at offset 10)"),
        (b"{}{}", "invalid JSON at line 1 column 3: Extra data"),
    ],
)
def test_bad_sidecar_reasons(tmp_path: Path, content: bytes, reason: str) -> None:
    model = tmp_path / "m.safetensors"
    sidecar_path(model, ".civitai.info").write_bytes(content)
    data = _files(model)
    assert data.civitai_info is None
    assert reason in data.errors["m.civitai.info"]


def test_unreadable_sidecars_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.safetensors"
    sidecar_path(model, ".json").mkdir()
    sidecar_path(model, ".cm-info.json").symlink_to(tmp_path / "gone.json")
    write_json(sidecar_path(model, ".metadata.json"), {"notes": "x" * 100})
    sidecar_path(model, ".civitai.info").write_bytes(b"\xef\xbb\xbf" + b'{"id": 5}')  # BOM
    monkeypatch.setattr(sidecars_module, "MAX_SIDECAR_BYTES", 50)
    data = _files(model)
    assert data.errors == {
        "m.json": "unreadable: Is a directory",
        "m.cm-info.json": "unreadable: No such file or directory",
        "m.metadata.json": "too large (117 bytes; the limit is 50 bytes)",
    }
    assert data.civitai_info == {"id": 5}


# --- merging: the precedence rule --------------------------------------------------------


def _header(**fields: Any) -> HeaderInfo:
    return HeaderInfo(**fields)


def _merge(header: HeaderInfo | None = None, **sidecars: Any) -> AdapterMetadata:
    return merge_metadata(header, SidecarData(**sidecars), file_name="ink-wash.safetensors")


FULL_HEADER = HeaderInfo(
    title="header title",
    description="header description",
    author="header author",
    base_model="SD 2",
    trigger_words=["header word"],
    tags=["header tag"],
    tensor_sha256=SHA_B,
    published_at=datetime(2020, 1, 1),
)


def test_a1111_user_edits_beat_civitai() -> None:
    info = civitai_version(
        sha256=SHA_A,
        file_name="ink-wash.safetensors",
        description="<p>Civitai words</p>",
        trained_words=["civitai word"],
        base_model="SDXL 1.0",
    )
    user = a1111_metadata(
        description="my words",
        activation_text="my trigger, civitai word",
        preferred_weight=0.55,
        sd_version="SD1",
        negative_text="lowres",
        notes="my notes",
    )
    merged = _merge(FULL_HEADER, civitai_info=info, a1111=user)
    assert merged.description == "my words"
    assert merged.activation_text == "my trigger, civitai word"
    assert merged.preferred_weight == 0.55
    assert merged.negative_text == "lowres"
    assert merged.notes == "my notes"
    assert merged.sd_version == "SD1"
    # base_model is Civitai's: "sd version" is a coarse category, used only after the header
    assert merged.base_model == "SDXL 1.0"
    assert merged.triggers == ["my trigger", "civitai word", "header word"]
    assert merged.trained_words == ["civitai word"]


def test_civitai_beats_the_header() -> None:
    info = civitai_version(
        sha256=SHA_A,
        file_name="ink-wash.safetensors",
        description="<p>Civitai words</p>",
        base_model="SDXL 1.0",
        published_at="2024-02-03T04:05:06.000Z",
    )
    model = civitai_model([info], creator="civitai author", tags=["civitai tag"])
    merged = _merge(FULL_HEADER, civitai_info=info, civitai_model=model)
    assert merged.name == "Ink Wash"
    assert merged.description == "Civitai words"
    assert merged.author == "civitai author"
    assert merged.base_model == "SDXL 1.0"
    assert merged.published_at == datetime(2024, 2, 3, 4, 5, 6)
    assert merged.tags == ["civitai tag", "header tag"]
    assert merged.tensor_sha256 == SHA_B


def test_empty_values_never_override() -> None:
    info = civitai_version(sha256=SHA_A, file_name="ink-wash.safetensors", trained_words=[])
    info.update(
        {"name": "", "description": "   ", "baseModel": None, "stats": {}, "publishedAt": None}
    )
    info["createdAt"] = None
    info["model"] = {"name": " ", "type": "", "nsfw": False}
    user = a1111_metadata(description="", activation_text="  ", preferred_weight=0)
    merged = _merge(FULL_HEADER, civitai_info=info, a1111=user)
    assert merged.name == "header title"
    assert merged.version_name is None
    assert merged.description == "header description"
    assert merged.base_model == "SD 2"
    assert merged.stats is None
    assert merged.published_at == datetime(2020, 1, 1)
    assert merged.activation_text == "header word"
    assert merged.preferred_weight is None
    assert merged.sd_version == "SD2"  # derived from the base model, "Unknown" ignored


def test_name_falls_back_to_header_else_stays_empty() -> None:
    assert _merge(_header(title="From Header")).name == "From Header"
    assert _merge(None).name == ""  # empty never renames; the importer names new ones
    assert _merge(None).primary_file_name == "ink-wash.safetensors"


def test_civitai_info_before_model_json_before_comfyui_before_stability_matrix() -> None:
    info = civitai_version(sha256=SHA_A, file_name="x", name="info version", model_name="Info")
    model = civitai_model(
        [civitai_version(sha256=SHA_A, file_name="x", name="model version")], name="Model"
    )
    comfy = {"model_name": "Comfy", "tags": ["comfy"], "favorite": False}
    sm = cm_info(sha256=SHA_A, model_name="SM", tags=["sm"])
    merged = _merge(civitai_info=info, civitai_model=model, comfyui=comfy, stability_matrix=sm)
    assert (merged.name, merged.version_name) == ("Info", "info version")
    assert merged.tags == ["style", "ink", "comfy", "sm"]
    assert merged.favorite_hint is False
    assert (_merge(comfyui=comfy, stability_matrix=sm)).name == "Comfy"
    assert _merge(stability_matrix=sm).name == "SM"
    assert _merge(stability_matrix=sm).author == "claymaker"


def test_model_json_version_matches_the_files_hash() -> None:
    first = civitai_version(sha256=SHA_A, file_name="a.safetensors", version_id=1, name="one")
    second = civitai_version(sha256=SHA_B, file_name="b.safetensors", version_id=2, name="two")
    model = civitai_model([first, second])
    by_actual = merge_metadata(
        None, SidecarData(civitai_model=model), file_name="x.safetensors", file_sha256=SHA_B
    )
    assert (by_actual.version_name, by_actual.civitai_version_id) == ("two", 2)
    assert by_actual.declared_sha256 == SHA_B
    claimed = {"sha256": SHA_B.upper()}
    assert _merge(civitai_model=model, comfyui=claimed).version_name == "two"
    # the computed hash beats a sidecar's (wrong) claim
    computed_wins = merge_metadata(
        None,
        SidecarData(civitai_model=model, comfyui={"sha256": SHA_A}),
        file_name="x.safetensors",
        file_sha256=SHA_B,
    )
    assert computed_wins.version_name == "two"
    assert _merge(civitai_model=model, civitai_info={"id": 2}).version_name == "two"
    assert _merge(civitai_model=model).version_name == "one"
    assert _merge(civitai_model=model).civitai_model_id == 11


def test_model_json_a1111_keys_are_user_edits_but_description_is_civitais() -> None:
    model = civitai_model([civitai_version(sha256=SHA_A, file_name="x")])
    model.update({"activation text": "typed by me", "preferred weight": 0.9, "sd version": "SDXL"})
    merged = _merge(_header(base_model="SD 1.5"), civitai_model=model)
    assert merged.activation_text == "typed by me"
    assert merged.preferred_weight == 0.9
    assert merged.sd_version == "SDXL"
    assert merged.description == "Traditional ink wash painting & sumi-e."
    assert merged.author == "sumi_painter"
    assert merged.stats is not None and merged.stats["downloadCount"] == 5000


def test_comfyui_fields() -> None:
    block = civitai_version(sha256=SHA_A, file_name="x", trained_words=["ink", "my own word"])
    doc = comfyui_metadata(
        Path("/loras/ink-wash.safetensors"),
        sha256=SHA_A,
        size=2048 * 1024,
        civitai=block,
        notes="comfy notes",
        usage_tips={"strength": 0.45, "clip_skip": 2},
        favorite=True,
        model_description="<p>Model text</p>",
    )
    merged = _merge(comfyui=doc)
    assert merged.notes == "comfy notes"
    assert merged.preferred_weight == 0.45
    assert merged.favorite_hint is True
    assert merged.triggers == ["ink", "my own word"]
    assert merged.description == "Model text"
    assert merged.primary_file_size_kb == 144  # Civitai's sizeKB (144.5) before the local size
    assert merged.preview_url and merged.preview_url.startswith("https://")
    local_only = {"preview_url": "/loras/x.preview.png", "size": 2048 * 1024, "sha256": SHA_A}
    assert _merge(comfyui=local_only).preview_url is None
    assert _merge(comfyui=local_only).primary_file_size_kb == 2048
    assert _merge(comfyui=local_only).declared_sha256 == SHA_A
    # A1111 user edits beat ComfyUI's
    user = a1111_metadata(notes="a1111 notes", preferred_weight=0.8)
    assert _merge(comfyui=doc, a1111=user).notes == "a1111 notes"
    assert _merge(comfyui=doc, a1111=user).preferred_weight == 0.8


def test_stability_matrix_fields_and_user_title() -> None:
    doc = cm_info(sha256=SHA_A.upper(), user_title="My Clay", nsfw=True)
    merged = _merge(_header(title="header"), stability_matrix=doc)
    assert merged.name == "My Clay"
    assert merged.version_name == "v2"
    assert merged.base_model == "SDXL 1.0"
    assert merged.sd_version == "SDXL"
    assert merged.trained_words == ["claymation"]
    assert merged.declared_sha256 == SHA_A
    assert (merged.civitai_model_id, merged.civitai_version_id) == (21, 201)
    assert merged.nsfw_level == 1
    assert merged.download_count == 777
    assert merged.description == "Claymation look."


def test_tags_and_triggers_union_case_insensitively_in_order() -> None:
    model = civitai_model([civitai_version(sha256=SHA_A, file_name="x")], tags=["Style", "ink"])
    sm = cm_info(sha256=SHA_A, tags=["STYLE", "clay"], trained_words=["INKWASH", "clay"])
    merged = _merge(
        _header(tags=["ink", "paper"], trigger_words=["Clay", "paper"]),
        civitai_model=model,
        stability_matrix=sm,
    )
    assert merged.tags == ["Style", "ink", "clay", "paper"]
    assert merged.trained_words == ["inkwash", "clay"]
    assert merged.triggers == ["inkwash", "clay", "paper"]
    assert merged.activation_text == "inkwash, clay"


@pytest.mark.parametrize(
    ("sources", "level"),
    [
        ({"civitai_info": {"nsfwLevel": 4, "model": {"nsfw": True}}}, 4),
        ({"civitai_info": {"model": {"nsfw": True}}}, 1),
        ({"civitai_info": {"nsfwLevel": 0, "model": {"nsfw": True}}}, 1),
        ({"civitai_info": {"nsfwLevel": 0}}, 0),
        ({"civitai_info": {"nsfwLevel": 0}, "comfyui": {"civitai": {"nsfwLevel": 8}}}, 8),
        ({"stability_matrix": {"Nsfw": True}}, 1),
        ({"civitai_info": {"nsfwLevel": True}}, None),
        ({}, None),
    ],
)
def test_nsfw_level(sources: dict[str, Any], level: int | None) -> None:
    assert _merge(**sources).nsfw_level == level


@pytest.mark.parametrize(
    ("sd_version", "base_model"),
    [("SD1", "SD 1.5"), ("SDXL", "SDXL 1.0"), ("sd2", "SD 2"), ("Unknown", None), ("", None)],
)
def test_a1111_sd_version_is_the_last_resort_base_model(
    sd_version: str, base_model: str | None
) -> None:
    user = a1111_metadata(sd_version=sd_version)
    assert _merge(a1111=user).base_model == base_model
    assert _merge(_header(base_model="Flux.1"), a1111=user).base_model == "Flux.1"


def test_file_fields_come_from_the_matching_file_entry() -> None:
    info = civitai_version(sha256=SHA_A, file_name="ink-wash.safetensors", size_kb=99.6)
    extra = dict(info["files"][0], name="training-data.zip", primary=False, sizeKB=5000.0)
    extra["hashes"] = {"SHA256": SHA_B.upper()}
    info["files"] = [extra, info["files"][0]]
    info["images"].insert(0, {"url": None, "type": "image"})  # an image still processing
    merged = _merge(civitai_info=info)
    assert merged.primary_file_name == "ink-wash.safetensors"
    assert merged.primary_file_size_kb == 100
    assert merged.declared_sha256 == SHA_A
    assert merged.download_url == "https://civitai.com/api/download/models/101"
    assert (merged.civitai_model_id, merged.civitai_version_id) == (11, 101)
    assert merged.download_count == 1234
    assert merged.model_type == "LORA"
    assert merged.preview_url and "civitai.com" in merged.preview_url
    assert merged.published_at == datetime(2024, 2, 3, 4, 5, 6)


def test_merge_never_raises_on_garbage_sidecars() -> None:
    garbage: dict[str, Any] = {
        "id": "not a number",
        "modelId": [1],
        "name": 5,
        "description": {"html": True},
        "trainedWords": "a, b",
        "files": [None, 3, {"hashes": "x", "sizeKB": "big", "name": None}],
        "images": {"url": 1},
        "stats": [1],
        "model": "nope",
        "publishedAt": 12,
        "nsfwLevel": "high",
        "baseModel": ["SD"],
    }
    merged = _merge(
        civitai_info=garbage,
        civitai_model={"modelVersions": "nope", "tags": [None, {"name": "t"}, 3], "creator": 1},
        comfyui={"civitai": [], "usage_tips": "{oops", "size": "big", "tags": "a,b"},
        stability_matrix={"Hashes": [], "TrainedWords": None, "Stats": "x"},
        a1111={"preferred weight": "heavy", "activation text": 3, "sd version": None},
    )
    assert merged.name == ""  # nothing named it: the importer falls back to the file stem
    assert merged.version_name == "5"
    assert merged.trained_words == ["a", "b"]
    assert merged.tags == ["t", "3", "a", "b"]
    assert merged.preferred_weight is None
    assert merged.civitai_version_id is None
    assert merged.nsfw_level is None


def test_extra_keeps_every_source() -> None:
    info = {"id": 1}
    header = _header(raw={"ss_output_name": "x"})
    merged = _merge(
        header,
        civitai_info=info,
        a1111={"notes": "n"},
        comfyui={"k": 1},
        stability_matrix={"ModelId": 2},
    )
    assert merged.extra == {
        "civitai_info": {"id": 1},
        "a1111": {"notes": "n"},
        "comfyui": {"k": 1},
        "stability_matrix": {"ModelId": 2},
        "safetensors": {"ss_output_name": "x"},
    }


def test_html_to_text() -> None:
    html = (
        "<h2>Ink&nbsp;Wash</h2>\n<p>Hello <b>world</b> &amp; friends &lt;lora:x:1&gt;</p>"
        "<p>Second<br>line<br/>third</p><ul><li>one</li><li>two</li></ul>"
        "<script>alert(1)</script><p></p>"
    )
    assert html_to_text(html) == (
        "Ink Wash\n\nHello world & friends <lora:x:1>\n\nSecond\nline\nthird\n\n- one\n- two"
    )


# --- the fixture library, read end to end ------------------------------------------------


@pytest.fixture(scope="module")
def fixture_library(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_fixture_library(tmp_path_factory.mktemp("library") / "loras")


def test_fixture_library_good_models_read_as_expected(fixture_library: Any) -> None:
    assert len(fixture_library.models) >= 10
    for key, expected in fixture_library.models.items():
        header = read_header(expected.path)
        files = find_sidecars(expected.path)
        data = read_sidecars(files)
        merged = merge_metadata(
            describe_header(header.metadata), data, file_name=expected.path.name
        )
        assert sha256_file(expected.path) == expected.sha256, key
        assert header.file_size == expected.size, key
        present = {name for name in ("civitai_info", "json", "metadata_json", "cm_info", "preview")}
        assert {name for name in present if getattr(files, name)} == expected.sidecars, key
        assert merged.name == expected.name, key
        assert merged.version_name == expected.version_name, key
        assert merged.base_model == expected.base_model, key
        assert set(expected.tags) <= set(merged.tags), key
        assert set(expected.triggers) <= set(merged.triggers), key
        if expected.activation_text is not None:
            assert merged.activation_text == expected.activation_text, key
        if expected.description_contains is not None:
            assert expected.description_contains in (merged.description or ""), key
        assert merged.preferred_weight == expected.preferred_weight, key
        assert merged.declared_sha256 == expected.declared_sha256, key
        assert merged.civitai_version_id == expected.civitai_version_id, key
        assert merged.nsfw_level == expected.nsfw_level, key
        assert set(data.errors) == set(expected.sidecar_errors), key
        for name, reason in expected.sidecar_errors.items():
            assert reason in data.errors[name], key
        for alias in expected.aliases:
            assert alias.resolve() == expected.path.resolve(), key


def test_fixture_library_special_cases(fixture_library: Any) -> None:
    wrong = fixture_library.model("wrong_claim")
    assert not wrong.claim_matches
    assert normalise_hash(wrong.declared_sha256) != sha256_file(wrong.path)
    assert all(m.claim_matches for k, m in fixture_library.models.items() if k != "wrong_claim")
    user = merge_metadata(
        None,
        read_sidecars(find_sidecars(fixture_library.model("user_edited").path)),
        file_name="retro-anime.safetensors",
    )
    assert user.description == "My own notes: great for backgrounds."
    assert user.negative_text == "3d, render"
    assert user.sd_version == "SDXL"
    full = fixture_library.model("full")
    data = read_sidecars(find_sidecars(full.path))
    assert set(merge_metadata(None, data, file_name=full.path.name).extra) == {
        "civitai_info",
        "civitai_model",
        "comfyui",
        "stability_matrix",
    }
    assert full.path.with_name("ink-wash.preview.png").read_bytes() == png_bytes()
    for path in fixture_library.listed_only:
        assert path.suffix in {".pt", ".ckpt", ".bin"} and path.stat().st_size > 0
    assert {p.suffix for p in fixture_library.listed_only} == {".pt", ".ckpt", ".bin"}
    for link in fixture_library.symlinked_dirs + fixture_library.directory_loops:
        assert link.is_symlink() and link.is_dir()
    assert fixture_library.directory_loops[0].resolve() == fixture_library.root.resolve()


def test_fixture_library_bad_files_fail_with_their_reason(fixture_library: Any) -> None:
    kinds = {bad.kind for bad in fixture_library.bad_files.values()}
    assert kinds == {"header", "directory", "broken_symlink", "symlink_loop"}
    for key, bad in fixture_library.bad_files.items():
        expected_type = SafetensorsError if bad.kind == "header" else OSError
        with pytest.raises(expected_type) as caught:
            read_header(bad.path)
        assert bad.reason in str(caught.value), key
        if bad.errno is not None:
            assert isinstance(caught.value, OSError) and caught.value.errno == bad.errno, key


def test_bulk_library_models_are_distinct_and_complete(tmp_path: Path) -> None:
    paths = build_bulk_library(tmp_path, 120, per_folder=50)
    assert len(paths) == 120
    assert len({p.parent for p in paths}) == 3
    hashes = dict(hash_files(paths, workers=4))
    assert len(set(hashes.values())) == 120
    sample = paths[7]
    data = read_sidecars(find_sidecars(sample))
    merged = merge_metadata(
        describe_header(read_header(sample).metadata),
        data,
        file_name=sample.name,
        file_sha256=str(hashes[sample]),
    )
    assert data.errors == {}
    assert merged.declared_sha256 == hashes[sample]
    assert merged.name == "Noir Bulk 7"
    assert merged.preferred_weight == 0.8
    assert merged.base_model == "SDXL 1.0"
    bare = build_bulk_library(tmp_path / "bare", 3, with_sidecars=False, seed=1)
    assert find_sidecars(bare[0]).paths() == []
