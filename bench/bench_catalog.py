"""Benchmark the catalog and the importer (issue 3) on SQLite and PostgreSQL.

1. Hashing throughput of large random files, page cache warm, against `sha256sum` on the same
   files in the same run: (a) `sha256_file` vs `sha256sum FILE`, one file at a time; (b)
   `hash_files` on a thread pool vs `sha256sum f1 f2 ...` in one process. MB/s.
2. First import of a generated library (10,000 models with two sidecars each) into a fresh
   database, in files/s; then rescans of the unchanged library, in seconds.
3. `GET /v1/adapters` with 100,000 bulk-loaded adapters through `TestClient(create_app(...))`:
   p50/p99 for five queries, with the repository alone, its two SQL statements alone and
   `GET /health/live` as same-run baselines; the plans of any query that misses its target.

    .venv/bin/python bench/bench_catalog.py [--quick] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import itertools
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import harness as h
from harness import BenchError, fmt, fmt_ms, median, percentile, say, time_limit
from sqlalchemy import Engine, event, insert, text

TITLE = "## Catalog and import (issue 3)"
MB = 1_000_000  # throughput in MB/s of 10^6 bytes, as sha256sum-style tools report it
MIB = h.MIB
HASH_RATIO_TARGET = 0.9  # (a): sha256_file ≥ 0.9 x sha256sum, one file at a time
RESCAN_TARGET_S = 2.0
API_P99_TARGET_MS = 50.0
MIN_REQUESTS = 50  # a query over its time budget still gets this many requests
REPO_REPEATS = 50  # repository-level calls per query
WARMUP_REQUESTS = 5

# -- 1. hashing ----------------------------------------------------------------------------


@dataclass
class HashResult:
    files: int
    file_bytes: int
    workers: int
    note: str = ""
    rounds: int = 0
    single_py: list[float] = field(default_factory=list)  # MB/s per round
    single_tool: list[float] = field(default_factory=list)
    parallel_py: list[float] = field(default_factory=list)
    serial_tool: list[float] = field(default_factory=list)
    openssl: list[float] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    write_seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return self.files * self.file_bytes

    def ratio_single(self) -> float | None:
        a, b = median(self.single_py), median(self.single_tool)
        return a / b if a and b else None

    def ratio_parallel(self) -> float | None:
        a, b = median(self.parallel_py), median(self.serial_tool)
        return a / b if a and b else None


def write_random_file(path: Path, size: int) -> None:
    chunk = 4 * MIB
    with open(path, "wb", buffering=0) as handle:
        left = size
        while left > 0:
            n = min(chunk, left)
            handle.write(os.urandom(n))
            left -= n


def read_once(path: Path) -> None:
    buffer = bytearray(8 * MIB)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass


def plan_hash_files(root: Path, files: int, size_mb: int) -> tuple[int, int, str]:
    """Scale the file set down when the disk or the page cache is short of room."""
    wanted = files * size_mb * MIB
    free = shutil.disk_usage(root).free
    available = _mem_available()
    limit = min(free // 2, available // 2 if available else wanted)
    note = ""
    while files * size_mb * MIB > limit and size_mb > 16:
        size_mb //= 2
    while files * size_mb * MIB > limit and files > 2:
        files -= 1
    if files * size_mb * MIB < wanted:
        note = (
            f"scaled down from {wanted // MIB} MiB: {free // MIB} MiB free on disk, "
            f"{available // MIB} MiB available memory"
        )
    return files, size_mb * MIB, note


def _mem_available() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_hashing(args: argparse.Namespace, resources: h.Resources) -> HashResult:
    from lora_manager.ingest.hashing import hash_files, sha256_file

    folder = resources.root / "hash"
    folder.mkdir()
    count, size, note = plan_hash_files(resources.root, args.hash_files, args.hash_mb)
    workers = len(os.sched_getaffinity(0)) or os.cpu_count() or 1
    result = HashResult(files=count, file_bytes=size, workers=workers, note=note)
    say(f"hashing: writing {count} files x {size // MIB} MiB of random bytes")
    paths = [folder / f"blob-{i}.bin" for i in range(count)]
    started = time.perf_counter()
    with time_limit("writing the hashing files", args.timeout):
        for path in paths:
            write_random_file(path, size)
        for path in paths:
            read_once(path)  # page cache warm before anything is timed
    result.write_seconds = time.perf_counter() - started
    names = [str(p) for p in paths]
    openssl = shutil.which("openssl")
    total = result.total_bytes

    for index in range(args.rounds):
        say(f"hashing round {index + 1}/{args.rounds}")
        with time_limit("hashing round", args.timeout):
            digests: dict[str, str] = {}
            # (a) one file at a time, in-process then with sha256sum
            seconds = 0.0
            for path in paths:
                t0 = time.perf_counter()
                digests[str(path)] = sha256_file(path)
                seconds += time.perf_counter() - t0
            single_py = total / seconds / MB
            seconds = 0.0
            for name in names:
                elapsed, output = resources.run("hash", ["sha256sum", name])
                seconds += elapsed
                _compare(result, name, digests, output)
            single_tool = total / seconds / MB
            # (b) all files: hash_files on the pool, sha256sum serially in one process
            t0 = time.perf_counter()
            for path, digest in hash_files(paths, workers=workers):
                if isinstance(digest, OSError):
                    raise BenchError(f"hash_files: {path}: {digest}")
                if digest != digests[str(path)]:
                    result.mismatches.append(f"hash_files({path.name}) != sha256_file")
            parallel_py = total / (time.perf_counter() - t0) / MB
            elapsed, output = resources.run("hash", ["sha256sum", *names])
            for name in names:
                _compare(result, name, digests, output)
            serial_tool = total / elapsed / MB
            if openssl:
                elapsed, _ = resources.run("hash", [openssl, "dgst", "-sha256", *names])
                result.openssl.append(total / elapsed / MB)
        result.single_py.append(single_py)
        result.single_tool.append(single_tool)
        result.parallel_py.append(parallel_py)
        result.serial_tool.append(serial_tool)
        result.rounds += 1
        say(
            f"  sha256_file {single_py:6.0f} MB/s  sha256sum FILE {single_tool:6.0f} MB/s  "
            f"hash_files {parallel_py:6.0f} MB/s  sha256sum f1..f{count} {serial_tool:6.0f} MB/s"
        )
    shutil.rmtree(folder, ignore_errors=True)
    return result


def _compare(result: HashResult, name: str, digests: dict[str, str], output: str) -> None:
    for line in output.splitlines():
        digest, _, listed = line.partition("  ")
        if listed.strip() == name and digest.strip() != digests[name]:
            result.mismatches.append(f"sha256sum disagrees on {Path(name).name}")


# -- 2. import -----------------------------------------------------------------------------


@dataclass
class ImportResult:
    backend: str
    files: int
    import_seconds: list[float] = field(default_factory=list)
    rescan_seconds: list[float] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)

    def files_per_second(self) -> list[float]:
        return [self.files / s for s in self.import_seconds]


@dataclass
class LibraryFacts:
    files: int
    sidecars: int
    bytes: int
    seconds: float


def build_library(root: Path, count: int, seed: int) -> LibraryFacts:
    from tests.support.library import build_bulk_library

    started = time.perf_counter()
    paths = build_bulk_library(root, count, seed=seed)
    seconds = time.perf_counter() - started
    total = sidecars = 0
    for folder in {p.parent for p in paths}:
        for entry in os.scandir(folder):
            total += entry.stat().st_size
            sidecars += not entry.name.endswith(".safetensors")
    return LibraryFacts(len(paths), sidecars, total, seconds)


def run_import(url: str, library: Path, resources: h.Resources, timeout: float, what: str) -> Any:
    """One `Importer.run` on a new engine; its summary gets `seconds_measured`, the exact wall
    time of the call (the summary's own `seconds` is rounded)."""
    from lora_manager.core.db import make_session_factory
    from lora_manager.ingest.service import Importer

    settings = h.make_settings(url, lora_roots=[library])
    engine = resources.engine(settings)
    try:
        with time_limit(what, timeout):
            importer = Importer(settings, make_session_factory(engine))
            started = time.perf_counter()
            summary = importer.run([library])
            summary.seconds_measured = time.perf_counter() - started
            return summary
    finally:
        resources.dispose(engine)


def bench_import(
    args: argparse.Namespace, resources: h.Resources, databases: h.Databases, backends: list[str]
) -> tuple[LibraryFacts, list[ImportResult]]:
    root = resources.root
    say(f"import: generating a library of {args.files} models with sidecars (not timed)")
    with time_limit("generating the library", args.timeout):
        facts = build_library(root / "library", args.files, seed=0)
        warm = root / "warmup-library"
        build_library(warm, min(200, args.files), seed=1)
    for backend in backends:  # imports every module and warms every code path once
        say(f"import: warm-up on {backend}")
        run_import(databases.fresh(backend, "warm"), warm, resources, args.timeout, "warm-up")
    results = {b: ImportResult(b, facts.files) for b in backends}
    library = root / "library"
    for index in range(args.rounds):
        say(f"import round {index + 1}/{args.rounds}")
        for backend in backends:
            res = results[backend]
            url = databases.fresh(backend, "import")
            first = run_import(url, library, resources, args.timeout, f"{backend} first import")
            _check_first(res, first)
            res.import_seconds.append(first.seconds_measured)
            rescans = []
            for _ in range(args.rescans):
                again = run_import(url, library, resources, args.timeout, f"{backend} rescan")
                _check_rescan(res, again)
                res.rescan_seconds.append(again.seconds_measured)
                rescans.append(again.seconds_measured)
            say(
                f"  {backend:<10} first import {first.seconds_measured:6.2f} s "
                f"({facts.files / first.seconds_measured:5.0f} files/s)  rescans "
                + ", ".join(f"{s:.2f} s" for s in rescans)
            )
    return facts, list(results.values())


def _check_first(res: ImportResult, summary: Any) -> None:
    if summary.new != res.files or summary.failed or summary.updated or summary.moved:
        note = (
            f"first import: new={summary.new} updated={summary.updated} moved={summary.moved} "
            f"failed={summary.failed} (expected new={res.files})"
        )
        if summary.failures:
            note += f"; first failure: {summary.failures[0]}"
        if note not in res.anomalies:
            res.anomalies.append(note)


def _check_rescan(res: ImportResult, summary: Any) -> None:
    changed = summary.new + summary.updated + summary.moved + summary.missing + summary.failed
    if summary.unchanged != res.files or changed:
        note = (
            f"rescan: unchanged={summary.unchanged} new={summary.new} updated="
            f"{summary.updated} moved={summary.moved} missing={summary.missing} "
            f"failed={summary.failed} (expected unchanged={res.files})"
        )
        if note not in res.anomalies:
            res.anomalies.append(note)


# -- 3. the catalog API --------------------------------------------------------------------

# Every word below is built so that the searched words occur exactly where placed: no filler
# word starts with a searched prefix.
RARE_WORD = "kintsugi"  # in the description of 1 % of the adapters
PREFIX_QUERY = "cyber samu"  # "cyberpunk" on 10 %, "samurai" on 10 %, both on 1 %
TAG = "watercolor"  # a tag of 5 % of the adapters
RESERVED_PREFIXES = ("kints", "cyber", "samu", "waterc")


def words_of(text_: str) -> list[str]:
    return text_.split()


ADJECTIVES = words_of(
    "ancient arcane autumn azure bold bright broken celestial chrome cinematic clean cosmic "
    "crimson cute dark detailed dreamy dusty elegant ethereal faded fiery floral frozen "
    "gilded glossy golden gothic grim hazy heroic icy inked jade lush lunar misty moody mystic "
    "noble obsidian ornate pale pastel polished primal radiant regal rustic scarlet serene "
    "shadowy silken silver smoky soft solar stormy sunlit tidal twilight velvet vivid wild "
    "wistful"
)
NOUNS = words_of(
    "alchemist archer armor assassin astronaut bard beast blossom castle cathedral city "
    "dancer desert dragon druid dryad engineer explorer fairy forest fox garden ghost giant "
    "gladiator golem harbor hunter knight lantern librarian lighthouse mage market mech "
    "mermaid monk moon nomad oracle paladin phoenix pilot pirate priestess ranger robot ronin "
    "ruins sailor scholar shrine sorceress spirit temple tiger valley village wanderer witch "
    "wolf"
)
STYLE_TAGS = words_of(
    "style character concept clothing background pose object anime photorealistic landscape "
    "portrait fantasy scifi horror cute architecture vehicle animal food meme"
)
BASE_MODELS = (
    ("SD 1.5", 30),
    ("SDXL 1.0", 30),
    ("Pony", 15),
    ("Illustrious", 10),
    ("Flux.1 D", 12),
    ("SD 3.5", 3),
)
COMMON_WORDS = words_of(
    "a an and the of with for in on to at by from this that is are be it use trained images "
    "lora model weight works best recommended prompt trigger word style character version "
    "strength high low quality detailed lighting background colors details face hair eyes "
    "outfit dress armor sword night day sky light shadow painting illustration render photo "
    "realistic anime sketch lineart texture composition scene epoch steps dataset faces "
    "hands pose portrait full body close up upper"
)
SYLLABLES = words_of("ka ri to na mi ro se lu va ne shi po da ki mo te ra zu fe lo an el or is um")


def filler_vocabulary(rng: random.Random, size: int) -> list[str]:
    words = list(dict.fromkeys(COMMON_WORDS))
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word in seen or word.startswith(RESERVED_PREFIXES):
            continue
        seen.add(word)
        words.append(word)
    return words


CONSTANT_COLUMNS: dict[str, Any] = {"weight": 1.0, "visibility": "Public", "preferred_weight": 0.8}
CONSTANT_COLUMNS |= {"supports_generation": False, "library_root": "/library/loras"}
CONSTANT_COLUMNS |= {"file_format": "safetensors", "archetype": None, "notes": None}
NULL_COLUMNS = "archetype_confidence favorite_updated_at rating_updated_at tensor_sha256"
CONSTANT_COLUMNS |= dict.fromkeys([*NULL_COLUMNS.split(), "declared_sha256", "search_text"])


def adapter_rows(count: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`count` realistic adapter rows, deterministic for a seed, with all columns set."""
    rng = random.Random(seed)
    vocabulary = filler_vocabulary(rng, 3000)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    cumulative = list(itertools.accumulate(weights))
    authors = [
        f"{rng.choice(ADJECTIVES)}_{rng.choice(NOUNS)}{rng.randint(1, 999)}" for _ in range(2000)
    ]
    base_names = [name for name, _ in BASE_MODELS]
    base_weights = [weight for _, weight in BASE_MODELS]
    epoch = datetime(2023, 1, 1)
    for i in range(count):
        adjective, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
        cyber = i % 10 == 3
        samurai = (i // 10) % 10 == 5
        name = f"{'Cyberpunk' if cyber else adjective.title()} {noun.title()}"
        if rng.random() < 0.3:
            name += f" {rng.choice(['LoRA', 'Style', 'XL', 'Concept', 'Character'])}"
        version = f"v{i % 9 + 1}.{i // 9}"
        base_model = rng.choices(base_names, base_weights)[0]
        tags = rng.sample(STYLE_TAGS, rng.randint(2, 5))
        if cyber:
            tags.append("cyberpunk")
        if i % 20 == 7:
            tags.append(TAG)
        user_tags = ["to-try"] if i % 50 == 0 else None
        trained = [f"{noun} style"] + (["samurai"] if samurai else [])
        words = rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(25, 90))
        if i % 100 == 42:
            words.insert(rng.randrange(len(words) + 1), RARE_WORD)
        description = (
            f"{name} for {base_model}. " + " ".join(words).capitalize() + ". Use the trigger "
            f"word '{trained[0]}' at weight 0.{rng.randint(5, 9)}."
        )
        created = epoch + timedelta(seconds=rng.randrange(2 * 365 * 86400))
        updated = created + timedelta(seconds=rng.randrange(30 * 86400))
        sha = hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()
        slug = f"{name.lower().replace(' ', '-')}-{i}"
        folder = base_model.lower().replace(" ", "").replace(".", "")
        path = f"/library/loras/{folder}/{slug}.safetensors"
        size = rng.randint(10, 300) * MIB + rng.randrange(MIB)
        downloads = int(rng.paretovariate(1.2) * 100)
        status = "ok" if rng.random() < 0.99 else rng.choice(["error", "missing"])
        active = i % 100 == 11
        mtime_ns = int(created.timestamp() * 1e9)
        yield CONSTANT_COLUMNS | {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "name": name,
            "version": version,
            "tags": tags,
            "file_path": path,
            "active": active,
            "ordinal": i // 100 if active else None,
            "created_at": created,
            "updated_at": updated,
            "canonical_version_name": version,
            "description": description,
            "author_username": rng.choice(authors),
            "published_at": created - timedelta(days=rng.randint(1, 300)),
            "trained_words": trained,
            "triggers": trained,
            "primary_file_name": f"{slug}.safetensors",
            "primary_file_size_kb": size // 1024,
            "primary_file_sha256": sha,
            "primary_file_download_url": f"https://civitai.com/api/download/models/{100000 + i}",
            "primary_file_local_path": path,
            "sd_version": "SDXL" if "XL" in base_model or base_model == "Pony" else "SD1",
            "nsfw_level": rng.choice([0, 0, 0, 1, 1, 2, 4]),
            "activation_text": ", ".join(trained),
            "stats": {"downloadCount": downloads, "thumbsUpCount": downloads // 10},
            "extra": {"civitai": {"modelId": 50000 + i, "versionId": 100000 + i}},
            "json_file_path": path.replace(".safetensors", ".civitai.info"),
            "json_file_mtime": updated,
            "json_file_size": rng.randint(2000, 40000),
            "last_ingested_at": updated,
            "is_favorite": rng.random() < 0.03,
            "rating": rng.randint(1, 5) if rng.random() < 0.1 else None,
            "user_tags": user_tags,
            "base_model": base_model,
            "download_count": downloads,
            "sha256": sha,
            "autov2": sha[:10].upper(),
            "file_size": size,
            "file_mtime_ns": mtime_ns,
            "real_path": path,
            "preview_path": path.replace(".safetensors", ".preview.png")
            if rng.random() < 0.7
            else None,
            "sidecar_state": {f"{slug}.civitai.info": [12345, mtime_ns]},
            "ingest_status": status,
            "ingest_error": "header: file too short" if status == "error" else None,
            "missing_since": updated if status == "missing" else None,
        }


@dataclass
class LoadFacts:
    adapters: int
    tags: int
    seconds: float
    analyze_seconds: float


def bulk_load(engine: Engine, count: int, timeout: float) -> LoadFacts:
    """Insert `count` adapters, their adaptertag rows, search_text and (SQLite) adapter_fts
    rows as the importer would leave them, with Core executemany in one transaction."""
    from lora_manager.catalog.repository import build_search_text, wanted_tags
    from lora_manager.core.models import Adapter, AdapterTag

    sqlite = engine.dialect.name == "sqlite"
    adapter_table = Adapter.__table__
    tag_table = AdapterTag.__table__
    fts = text("INSERT INTO adapter_fts (adapter_id, body) VALUES (:id, :body)")
    started = time.perf_counter()
    tag_count = 0
    chunk: list[dict[str, Any]] = []

    def flush(conn: Any) -> int:
        if not chunk:
            return 0
        tag_rows: list[dict[str, Any]] = []
        for row in chunk:
            # What repository.replace_tags writes: metadata tags, user tags win the flag.
            wanted = wanted_tags(row["tags"], row["user_tags"])
            tag_rows += [
                {"adapter_id": row["id"], "tag": t, "is_user": u} for t, u in wanted.items()
            ]
            # What repository.refresh_search writes: build_search_text of the adapter, here
            # of a stand-in with every column set (an unsaved Adapter costs 3x as much).
            row["search_text"] = build_search_text(SimpleNamespace(**row))  # type: ignore[arg-type]
        conn.execute(insert(adapter_table), chunk)
        conn.execute(insert(tag_table), tag_rows)
        if sqlite:
            conn.execute(fts, [{"id": r["id"], "body": r["search_text"] or ""} for r in chunk])
        chunk.clear()
        return len(tag_rows)

    for row in adapter_rows(200, seed=1):  # the stand-in must see what an Adapter shows
        if build_search_text(SimpleNamespace(**row)) != build_search_text(Adapter(**row)):  # type: ignore[arg-type]
            raise BenchError("build_search_text reads something a plain row does not carry")
    with time_limit(f"bulk-loading {count} adapters", timeout), engine.begin() as conn:
        for row in adapter_rows(count):
            chunk.append(row)
            if len(chunk) >= 2000:
                tag_count += flush(conn)
        tag_count += flush(conn)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    with time_limit("ANALYZE", timeout):
        if sqlite:
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        else:
            # The throwaway cluster commits asynchronously, and VACUUM cannot mark a page
            # all-visible before the commit that filled it is flushed: CHECKPOINT first, or
            # index-only scans would fetch every heap row (not what a live database does).
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("CHECKPOINT")
                conn.exec_driver_sql("VACUUM ANALYZE")
                pages, visible = conn.exec_driver_sql(
                    "SELECT sum(relpages), sum(relallvisible) FROM pg_class "
                    "WHERE relname IN ('adapter', 'adaptertag')"
                ).one()
                if visible < pages:
                    conn.exec_driver_sql("VACUUM")
    return LoadFacts(count, tag_count, loaded, time.perf_counter() - started)


@dataclass(frozen=True)
class Query:
    key: str
    label: str
    params: dict[str, Any]
    expected: int  # rows it must match

    def url(self) -> str:
        from urllib.parse import urlencode

        return "/v1/adapters" + (f"?{urlencode(self.params)}" if self.params else "")

    def filters(self) -> Any:
        from lora_manager.catalog.repository import AdapterFilters

        tags = self.params.get("tag")
        return AdapterFilters(q=self.params.get("q"), tags_any=[tags] if tags else [])


def api_queries(count: int) -> list[Query]:
    deep = max(0, count - 1000)
    return [
        Query("first", "first page", {}, count),
        Query("word", f"text search `q={RARE_WORD}` (1 %)", {"q": RARE_WORD}, count // 100),
        Query(
            "prefix",
            f"two-word prefix search `q={PREFIX_QUERY}` (1 %)",
            {"q": PREFIX_QUERY},
            count // 100,
        ),
        Query("tag", f"tag filter `tag={TAG}` (5 %)", {"tag": TAG}, count // 20),
        Query("deep", f"deep page `offset={deep}&limit=50`", {"offset": deep, "limit": 50}, count),
    ]


@dataclass
class QueryResult:
    query: Query
    total: int | None = None
    http: list[float] = field(default_factory=list)
    repo: list[float] = field(default_factory=list)
    sql_count: list[float] = field(default_factory=list)
    sql_page: list[float] = field(default_factory=list)
    budget_hit: bool = False
    errors: list[str] = field(default_factory=list)
    plans: list[tuple[str, str]] = field(default_factory=list)  # (statement, plan)

    def passed(self) -> bool | None:
        p99 = percentile(self.http, 99)
        if p99 is None:
            return None
        return p99 * 1000 <= API_P99_TARGET_MS and not self.errors


@dataclass
class ApiResult:
    backend: str
    load: LoadFacts
    queries: list[QueryResult]
    baseline: list[float]  # GET /health/live: the HTTP stack and TestClient alone


class StatementLog:
    """The SQL statements (driver text and parameters) run while `capture` is on."""

    def __init__(self, engine: Engine) -> None:
        self.capture = False
        self.records: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, _conn: Any, _cursor: Any, stmt: str, params: Any, _ctx: Any, _m: Any) -> None:
        if self.capture:
            self.records.append((stmt, params))


def time_raw(engine: Engine, statement: str, params: Any, repeats: int) -> list[float]:
    """Seconds of `execute` + `fetchall` of one statement on a raw driver cursor: the
    database's and the driver's share of a call, without SQLAlchemy's ORM."""
    times = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for _ in range(repeats):
            started = time.perf_counter()
            cursor.execute(statement, params)
            cursor.fetchall()
            times.append(time.perf_counter() - started)
        cursor.close()
        raw.rollback()
    finally:
        raw.close()
    return times


def is_count(statement: str) -> bool:
    return statement.lstrip().lower().startswith("select count(")


def bench_api(
    args: argparse.Namespace, resources: h.Resources, databases: h.Databases, backend: str
) -> ApiResult:
    from fastapi.testclient import TestClient

    from lora_manager.api.app import create_app
    from lora_manager.catalog import repository

    url = databases.fresh(backend, "api")
    settings = h.make_settings(url)
    engine = resources.engine(settings)
    say(f"api: bulk-loading {args.adapters} adapters into {backend}")
    load = bulk_load(engine, args.adapters, args.timeout)
    resources.dispose(engine)
    say(
        f"  loaded in {load.seconds:.1f} s ({args.adapters / load.seconds:,.0f} adapters/s), "
        f"{load.tags} tag rows; ANALYZE {load.analyze_seconds:.1f} s"
    )
    queries = api_queries(args.adapters)
    results = [QueryResult(q) for q in queries]
    # The bulk load leaves this process with millions of objects a server would not hold:
    # collect them and freeze the survivors, so the GC's full passes don't time the loader.
    gc.collect()
    gc.freeze()
    app = create_app(settings, migrate_on_startup=False)
    resources.engines.append(app.state.engine)
    with TestClient(app) as client:
        for res in results:  # sanity and warm-up
            for _ in range(WARMUP_REQUESTS):
                reply = client.get(res.query.url())
            if reply.status_code != 200:
                raise BenchError(f"{res.query.url()}: HTTP {reply.status_code} {reply.text[:300]}")
            body = reply.json()
            res.total = int(body["total"])
            if res.total != res.query.expected:
                res.errors.append(f"total {res.total}, expected {res.query.expected}")
            if len(body["items"]) != min(50, max(0, res.total - res.query.params.get("offset", 0))):
                res.errors.append(f"{len(body['items'])} items on the page")
        for _ in range(WARMUP_REQUESTS):
            client.get("/health/live")
        baseline = h.timed(lambda _n: client.get("/health/live"), args.requests)
        say(f"api: {args.requests} requests per query on {backend}")

        def check(key: str, reply: Any) -> None:
            if reply.status_code != 200:
                raise BenchError(f"{key}: HTTP {reply.status_code}")

        calls = {r.query.key: (lambda _n, u=r.query.url(): client.get(u)) for r in results}
        with time_limit(f"{backend} HTTP requests", args.timeout * 2):
            times, over = h.blocks(calls, args.requests, args.query_budget, check=check)
        for res in results:
            res.http, res.budget_hit = times[res.query.key], res.query.key in over
            say(
                f"  {res.query.key:<7} n={len(res.http):<4} p50 {fmt_ms(median(res.http)):>6} ms"
                f"  p99 {fmt_ms(percentile(res.http, 99)):>6} ms  total {res.total}"
            )

        # The repository alone, on the app's own engine and session factory; then its SQL
        # statements alone on a raw driver cursor.
        statements = StatementLog(app.state.engine)
        factory = app.state.session_factory
        repeats = min(REPO_REPEATS, args.requests)
        with time_limit(f"{backend} repository calls", args.timeout):
            for res in results:
                query = res.query
                offset = int(query.params.get("offset", 0))
                for index in range(repeats):
                    statements.records.clear()
                    with factory() as session:
                        statements.capture = index == repeats - 1
                        t0 = time.perf_counter()
                        repository.list_adapters(
                            session, query.filters(), sort="name", limit=50, offset=offset
                        )
                        res.repo.append(time.perf_counter() - t0)
                        statements.capture = False
                for stmt, params in statements.records:
                    raw = time_raw(app.state.engine, stmt, params, repeats)
                    (res.sql_count if is_count(stmt) else res.sql_page).extend(raw)
                    res.plans.append((stmt, explain(app.state.engine, stmt, params)))
        say(
            "  repository p50: "
            + ", ".join(f"{r.query.key} {fmt_ms(median(r.repo))} ms" for r in results)
        )
    return ApiResult(backend, load, results, baseline)


def explain(engine: Engine, statement: str, params: Any) -> str:
    """EXPLAIN QUERY PLAN (SQLite) or EXPLAIN ANALYZE (PostgreSQL) of one captured statement."""
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
                depth: dict[int, int] = {0: -1}
                lines = []
                for node, parent, _unused, detail in rows:
                    depth[node] = depth.get(parent, -1) + 1
                    lines.append("  " * depth[node] + str(detail))
                return "\n".join(lines)
            rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).all()
            return "\n".join(str(row[0]) for row in rows)
    except Exception as exc:  # the plan is a diagnostic: never abort the run for it
        return f"(no plan: {type(exc).__name__}: {str(exc).splitlines()[0]})"


# -- the report ----------------------------------------------------------------------------


def hash_section(hr: HashResult) -> list[str]:
    def row(label: str, values: list[float], target: str = "—", ok: bool | None = None):
        return [*h.stat_row(label, values, 0), target, h.verdict(ok)]

    def ratio_row(label: str, value: float | None, target: str, ok: bool | None):
        return [label, "", fmt(value, 2) + "x" if value else "—", "", "", target, h.verdict(ok)]

    ra, rb = hr.ratio_single(), hr.ratio_parallel()
    speedup = median(hr.parallel_py) / median(hr.single_py) if hr.single_py else None  # type: ignore[operator]
    rows = [
        row("(a) `sha256_file`, one file at a time", hr.single_py),
        row("(a) `sha256sum FILE`, one file at a time", hr.single_tool),
        ratio_row(
            "(a) ratio `sha256_file` ÷ `sha256sum`",
            ra,
            f"≥ {HASH_RATIO_TARGET}x",
            None if ra is None else ra >= HASH_RATIO_TARGET,
        ),
        row(f"(b) `hash_files`, {hr.workers} workers", hr.parallel_py),
        row(f"(b) `sha256sum f1 … f{hr.files}`, one process", hr.serial_tool),
        ratio_row(
            "(b) ratio `hash_files` ÷ `sha256sum f1 … fN`",
            rb,
            "> 1x",
            None if rb is None else rb > 1,
        ),
        *([row("reference: `openssl dgst -sha256 f1 … fN`", hr.openssl)] if hr.openssl else []),
        ratio_row(
            f"`hash_files` ÷ `sha256_file` (parallel speed-up, {hr.workers} cores)",
            speedup,
            "—",
            None,
        ),
    ]
    return [
        "### 1. Hashing throughput",
        "",
        f"{hr.files} files of {hr.file_bytes // MIB} MiB of random bytes "
        f"({hr.total_bytes / MB:,.0f} MB){' — ' + hr.note if hr.note else ''}, page cache warm. "
        f"{hr.rounds} rounds; a round's figure is total bytes ÷ total wall time (MB = 10⁶ "
        "bytes); `sha256sum` runs as a subprocess (start-up included); digests cross-checked.",
        "",
        h.table(("measurement", "n", "median MB/s", "min", "max", "target", "result"), rows),
        "",
        *(f"- ⚠ {m}" for m in hr.mismatches),
    ]


def import_section(args: argparse.Namespace, lib: LibraryFacts, imports: list[ImportResult]):
    rows = []
    for res in imports:
        db = h.LABELS[res.backend]
        rows.append(
            [
                *h.stat_row(
                    f"first import of {res.files:,} files, files/s", res.files_per_second(), 0
                ),
                db,
                "—",
                "—",
            ]
        )
        rows.append([*h.stat_row("first import, seconds", res.import_seconds, 2), db, "—", "—"])
    for res in imports:
        med = median(res.rescan_seconds)
        ok = None if med is None else med <= RESCAN_TARGET_S and not res.anomalies
        rows.append(
            [
                *h.stat_row(
                    f"rescan of the unchanged {res.files:,}, seconds", res.rescan_seconds, 2
                ),
                h.LABELS[res.backend],
                f"≤ {RESCAN_TARGET_S:g} s",
                h.verdict(ok),
            ]
        )
    rows = [[r[0], r[5], *r[1:5], *r[6:]] for r in rows]
    return [
        "### 2. First import and rescan",
        "",
        f"`build_bulk_library(root, {lib.files})`: {lib.files:,} safetensors models with "
        f"{lib.sidecars:,} sidecars, {lib.bytes / MB:.1f} MB; generated once in "
        f"{lib.seconds:.1f} s (not timed). `Importer(settings, session_factory).run([root])` "
        f"in-process, wall time of the call; {args.rounds} rounds after an untimed warm-up "
        f"import of 200 models, each into a new migrated database, then {args.rescans} "
        "rescan(s). Every summary is checked (all new, then all unchanged).",
        "",
        h.table(("measurement", "database", "n", "median", "min", "max", "target", "result"), rows),
        "",
        *(f"- ⚠ {h.LABELS[r.backend]}: {x}" for r in imports for x in r.anomalies),
    ]


def api_section(args: argparse.Namespace, apis: list[ApiResult]) -> list[str]:
    rows = [
        [
            *h.latency_row("baseline: `GET /health/live` (no database)", x.baseline, 99),
            h.LABELS[x.backend],
            "—",
            *["—"] * 5,
        ]
        for x in apis
    ]
    for key in [q.key for q in api_queries(args.adapters)]:
        for x in apis:
            r = next(r for r in x.queries if r.query.key == key)
            row = h.latency_row(r.query.label, r.http, 99)
            row[1] += " (budget)" if r.budget_hit else ""
            rows.append(
                [
                    *row,
                    h.LABELS[x.backend],
                    f"{r.total:,}" if r.total is not None else "—",
                    fmt_ms(median(r.repo)),
                    fmt_ms(median(r.sql_count)),
                    fmt_ms(median(r.sql_page)),
                    f"≤ {API_P99_TARGET_MS:g} ms",
                    h.verdict(r.passed()),
                ]
            )
    rows = [[r[0], r[5], r[6], *r[1:5], *r[7:]] for r in rows]
    loads = "; ".join(
        f"{h.LABELS[x.backend]} {x.load.seconds:.1f} s ({x.load.adapters / x.load.seconds:,.0f}"
        f" adapters/s, {x.load.tags:,} tag rows) + ANALYZE {x.load.analyze_seconds:.1f} s"
        for x in apis
    )
    lines = [
        f"### 3. `GET /v1/adapters` with {args.adapters:,} adapters",
        "",
        f"Adapters generated deterministically and bulk-loaded with Core (with what "
        f"`replace_tags` and `refresh_search` write): {loads}. One in-process "
        "`TestClient(create_app(settings, migrate_on_startup=False))`, default sort and page "
        f"size; {WARMUP_REQUESTS} untimed requests per query, then {args.requests} timed ones "
        "in blocks of 20, query after query. *repo* is `repository.list_adapters` alone; *SQL "
        "count/page* its two statements on a raw driver cursor; *matches* the answer's "
        "checked `total`. Times in ms; the target is judged on HTTP p99.",
        "",
        h.table(
            (
                "query",
                "database",
                "matches",
                "n",
                "HTTP p50",
                "HTTP p99",
                "HTTP max",
                "repo p50",
                "SQL count p50",
                "SQL page p50",
                "target p99",
                "result",
            ),
            rows,
        ),
        "",
        *(
            f"- ⚠ {h.LABELS[x.backend]}, {r.query.label}: {e}"
            for x in apis
            for r in x.queries
            for e in r.errors
        ),
    ]
    shown = [(x, r) for x in apis for r in x.queries if args.plans or r.passed() is False]
    if shown:
        lines += [
            "Plans (SQLite: `EXPLAIN QUERY PLAN`; PostgreSQL: `EXPLAIN (ANALYZE, "
            "BUFFERS)`) of the queries that miss their target:",
            "",
        ]
    for x, r in shown:
        lines.append(f"<details><summary>{h.LABELS[x.backend]}, {r.query.label}</summary>\n")
        for statement, plan in r.plans:
            lines += [f"{'count' if is_count(statement) else 'page'}:", "", "```", plan, "```", ""]
        lines += ["</details>", ""]
    return lines


def summary(hr: HashResult | None, imports: list[ImportResult], apis: list[ApiResult]) -> str:
    parts: list[str] = []
    if hr:
        parts.append(
            f"Hashing: `sha256_file` runs at {fmt(hr.ratio_single(), 2)}x `sha256sum` one file "
            f"at a time and `hash_files` at {fmt(hr.ratio_parallel(), 2)}x `sha256sum f1 … fN`"
            + (
                f"; `openssl dgst` reaches {fmt(median(hr.openssl), 0)} MB/s on one core (the "
                "gap to `sha256sum` is coreutils' portable SHA-256 against OpenSSL's)."
                if hr.openssl
                else "."
            )
        )
    for res in imports:
        med = median(res.rescan_seconds)
        parts.append(
            f"{h.LABELS[res.backend]}: first import {fmt(median(res.files_per_second()), 0)} "
            f"files/s, rescan {fmt(med, 2)} s "
            f"({'within' if med and med <= RESCAN_TARGET_S else 'over'} the target)."
        )
    for x in apis:
        fails = [r for r in x.queries if r.passed() is False]
        overhead = median(
            [(median(r.http) or 0) - (median(r.repo) or 0) for r in x.queries if r.repo]
        )
        parts.append(
            f"{h.LABELS[x.backend]} API: "
            + (
                "every query within p99 ≤ 50 ms"
                if not fails
                else "over target: "
                + ", ".join(f"{r.query.key} (p50 {fmt_ms(median(r.http))} ms)" for r in fails)
            )
            + f"; HTTP p50 minus repository p50 is about {fmt_ms(overhead)} ms per request, of "
            f"which {fmt_ms(median(x.baseline))} ms is the bare HTTP stack (`/health/live`)."
        )
    return " ".join([*parts, "The machine is shared: compare medians."])


def measure(args: argparse.Namespace, res: h.Resources) -> tuple[str, list[str]]:
    server = None
    if "postgresql" in args.backends and {"import", "api"} & set(args.parts):
        say("starting a throwaway PostgreSQL server")
        server = res.postgres()
    databases = h.Databases(res.root, server)
    hr, lib, imports, apis = None, None, [], []
    body: list[str] = []
    if "hash" in args.parts:
        hr = bench_hashing(args, res)
        body += hash_section(hr)
    if "import" in args.parts:
        lib, imports = bench_import(args, res, databases, args.backends)
        shutil.rmtree(res.root / "library", ignore_errors=True)
        body += import_section(args, lib, imports)
    if "api" in args.parts:
        apis = [bench_api(args, res, databases, backend) for backend in args.backends]
        body += api_section(args, apis)
    pg = res.facts.get("postgres")
    software = f", {pg} (throwaway local cluster, fsync off)" if pg else ""
    return software, [*body, summary(hr, imports, apis), ""]


OPTIONS: dict[str, h.Option] = {
    "rounds": (3, 2, "rounds of hashing and of first imports"),
    "rescans": (2, 1, "rescans after each first import"),
    "hash_files": (6, 2, "large files to hash"),
    "hash_mb": (256, 32, "MiB per hashed file"),
    "files": (10_000, 500, "models in the import library"),
    "adapters": (100_000, 5000, "adapters for the API part"),
    "requests": (200, 50, "timed HTTP requests per query"),
    "query_budget": (
        60.0,
        60.0,
        f"seconds of requests per query before it stops at {MIN_REQUESTS}",
    ),
    "plans": (False, False, "print every query's plan"),
}
LISTS = {"parts": ("hash", "import", "api"), "backends": tuple(h.LABELS)}

if __name__ == "__main__":
    sys.exit(h.run(__file__, __doc__ or "", TITLE, measure, OPTIONS, LISTS))
