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

HASH_KINDS = ("single_py", "single_tool", "parallel_py", "serial_tool", "openssl")


@dataclass
class HashResult:
    files: int
    file_bytes: int
    workers: int
    note: str = ""
    mbps: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HASH_KINDS})
    mismatches: list[str] = field(default_factory=list)

    def ratio(self, a: str, b: str) -> float | None:
        x, y = median(self.mbps[a]), median(self.mbps[b])
        return x / y if x and y else None


def plan_hash_files(root: Path, files: int, size_mb: int) -> tuple[int, int, str]:
    """Scale the file set down when the disk or the page cache is short of room."""
    wanted, free = files * size_mb * MIB, shutil.disk_usage(root).free
    available = int((h.proc_field("/proc/meminfo", "MemAvailable:") or "0 kB").split()[0]) * 1024
    limit = min(free // 2, available // 2 if available else wanted)
    while files * size_mb * MIB > limit and size_mb > 16:
        size_mb //= 2
    while files * size_mb * MIB > limit and files > 2:
        files -= 1
    note = f"scaled down from {wanted // MIB} MiB: {free // MIB} MiB free on disk, "
    note += f"{available // MIB} MiB available memory"
    return files, size_mb * MIB, note if files * size_mb * MIB < wanted else ""


def bench_hashing(args: argparse.Namespace, resources: h.Resources) -> HashResult:
    from lora_manager.ingest.hashing import hash_files, sha256_file

    folder = resources.root / "hash"
    folder.mkdir()
    count, size, note = plan_hash_files(resources.root, args.hash_files, args.hash_mb)
    result = HashResult(count, size, len(os.sched_getaffinity(0)), note)
    say(f"hashing: writing {count} files x {size // MIB} MiB of random bytes")
    paths = [folder / f"blob-{i}.bin" for i in range(count)]
    names = [str(p) for p in paths]
    with time_limit("writing the hashing files", args.timeout):
        for path in paths:
            with path.open("wb") as handle:
                for left in range(size, 0, -4 * MIB):
                    handle.write(os.urandom(min(4 * MIB, left)))
        for path in paths:  # page cache warm before anything is timed
            with path.open("rb", buffering=0) as handle:
                while handle.read(8 * MIB):
                    pass
    openssl, total = shutil.which("openssl"), count * size
    digests = {name: "" for name in names}

    def tool(argv: list[str]) -> float:
        elapsed, output = resources.run("hash", argv)
        for line in output.splitlines() if argv[0] == "sha256sum" else []:
            digest, _, name = line.partition("  ")
            if digests.get(name.strip(), digest) != digest:
                result.mismatches.append(f"sha256sum disagrees on {Path(name).name}")
        return elapsed

    for index in range(args.rounds):
        say(f"hashing round {index + 1}/{args.rounds}")
        with time_limit("hashing round", args.timeout):
            # (a) one file at a time, in-process then with sha256sum
            started = time.perf_counter()
            for name in names:
                digests[name] = sha256_file(Path(name))
            seconds = {"single_py": time.perf_counter() - started}
            seconds["single_tool"] = sum(tool(["sha256sum", name]) for name in names)
            # (b) all files: hash_files on the pool, sha256sum serially in one process
            started = time.perf_counter()
            for path, digest in hash_files(paths, workers=result.workers):
                if isinstance(digest, OSError):
                    raise BenchError(f"hash_files: {path}: {digest}")
                if digest != digests[str(path)]:
                    result.mismatches.append(f"hash_files({path.name}) != sha256_file")
            seconds["parallel_py"] = time.perf_counter() - started
            seconds["serial_tool"] = tool(["sha256sum", *names])
            if openssl:
                seconds["openssl"] = tool([openssl, "dgst", "-sha256", *names])
        for kind, value in seconds.items():
            result.mbps[kind].append(total / value / MB)
        say("  " + ", ".join(f"{k} {total / v / MB:,.0f} MB/s" for k, v in seconds.items()))
    shutil.rmtree(folder, ignore_errors=True)
    return result


# -- 2. import -----------------------------------------------------------------------------


@dataclass
class ImportResult:
    backend: str
    files: int
    import_seconds: list[float] = field(default_factory=list)
    rescan_seconds: list[float] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)

    def check(self, summary: Any, first: bool) -> None:
        """First import: all new; rescan: all unchanged; nothing failed."""
        keys = ("new", "updated", "moved", "failed") + (() if first else ("missing", "unchanged"))
        want = dict.fromkeys(keys, 0) | {"new" if first else "unchanged": self.files}
        got = {key: getattr(summary, key) for key in want}
        note = f"{'first import' if first else 'rescan'}: {got}, expected {want}"
        note += f"; first failure: {summary.failures[0]}" if summary.failures else ""
        if got != want and note not in self.anomalies:
            self.anomalies.append(note)


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
    entries = [e for folder in {p.parent for p in paths} for e in os.scandir(folder)]
    sidecars = sum(not e.name.endswith(".safetensors") for e in entries)
    return LibraryFacts(len(paths), sidecars, sum(e.stat().st_size for e in entries), seconds)


def run_import(url: str, library: Path, resources: h.Resources, timeout: float, what: str) -> Any:
    """One `Importer.run` on a new engine, and the exact wall time of the call."""
    from lora_manager.core.db import make_session_factory
    from lora_manager.ingest.service import Importer

    settings = h.make_settings(url, lora_roots=[library])
    engine = resources.engine(settings)
    try:
        with time_limit(what, timeout):
            importer = Importer(settings, make_session_factory(engine))
            started = time.perf_counter()
            summary = importer.run([library])
            return summary, time.perf_counter() - started
    finally:
        resources.dispose(engine)


def bench_import(
    args: argparse.Namespace, resources: h.Resources, databases: h.Databases, backends: list[str]
) -> tuple[LibraryFacts, list[ImportResult]]:
    library, warm = resources.root / "library", resources.root / "warmup-library"
    say(f"import: generating a library of {args.files} models with sidecars (not timed)")
    with time_limit("generating the library", args.timeout):
        facts = build_library(library, args.files, seed=0)
        build_library(warm, min(200, args.files), seed=1)
    for backend in backends:  # imports every module and warms every code path once
        run_import(databases.fresh(backend, "warm"), warm, resources, args.timeout, "warm-up")
    results = {b: ImportResult(b, facts.files) for b in backends}
    for index in range(args.rounds):
        say(f"import round {index + 1}/{args.rounds}")
        for backend, res in results.items():
            url = databases.fresh(backend, "import")
            first, seconds = run_import(url, library, resources, args.timeout, "first import")
            res.check(first, first=True)
            res.import_seconds.append(seconds)
            for _ in range(args.rescans):
                again, seconds = run_import(url, library, resources, args.timeout, "rescan")
                res.check(again, first=False)
                res.rescan_seconds.append(seconds)
            say(f"  {backend:<10} first import {res.import_seconds[-1]:.2f} s, rescans "
                + ", ".join(f"{s:.2f} s" for s in res.rescan_seconds[-args.rescans :]))  # fmt: skip
    return facts, list(results.values())


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

    sqlite, tags = engine.dialect.name == "sqlite", 0
    fts = text("INSERT INTO adapter_fts (adapter_id, body) VALUES (:id, :body)")
    for row in adapter_rows(200, seed=1):  # the stand-in must see what an Adapter shows
        if build_search_text(SimpleNamespace(**row)) != build_search_text(Adapter(**row)):  # type: ignore[arg-type]
            raise BenchError("build_search_text reads something a plain row does not carry")
    started, rows = time.perf_counter(), adapter_rows(count)
    with time_limit(f"bulk-loading {count} adapters", timeout), engine.begin() as conn:
        while chunk := list(itertools.islice(rows, 2000)):
            tag_rows: list[dict[str, Any]] = []
            for row in chunk:
                # What repository.replace_tags writes: metadata tags, user tags win the flag.
                wanted = wanted_tags(row["tags"], row["user_tags"]).items()
                tag_rows += [{"adapter_id": row["id"], "tag": t, "is_user": u} for t, u in wanted]
                # What repository.refresh_search writes, from a stand-in with every column set
                # (an unsaved Adapter costs 3x as much).
                row["search_text"] = build_search_text(SimpleNamespace(**row))  # type: ignore[arg-type]
            conn.execute(insert(Adapter.__table__), chunk)
            conn.execute(insert(AdapterTag.__table__), tag_rows)
            tags += len(tag_rows)
            if sqlite:
                conn.execute(fts, [{"id": r["id"], "body": r["search_text"] or ""} for r in chunk])
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
    return LoadFacts(count, tags, loaded, time.perf_counter() - started)


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
    deep, prefix = max(0, count - 1000), f"two-word prefix search `q={PREFIX_QUERY}` (1 %)"
    return [
        Query("first", "first page", {}, count),
        Query("word", f"text search `q={RARE_WORD}` (1 %)", {"q": RARE_WORD}, count // 100),
        Query("prefix", prefix, {"q": PREFIX_QUERY}, count // 100),
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
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        times = h.timed(lambda _: (cursor.execute(statement, params), cursor.fetchall()), repeats)
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
    with resources.client(settings) as (app, client):
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
    mb, ratio = hr.mbps, hr.ratio
    b = "(b) ratio `hash_files` ÷ `sha256sum f1 … fN`"
    specs = [  # (label, MB/s per round) or (label, ratio, target)
        ("(a) `sha256_file`, one file at a time", mb["single_py"]),
        ("(a) `sha256sum FILE`, one file at a time", mb["single_tool"]),
        ("(a) ratio `sha256_file` ÷ `sha256sum`", ratio("single_py", "single_tool"), "≥ 0.9x"),
        (f"(b) `hash_files`, {hr.workers} workers", mb["parallel_py"]),
        (f"(b) `sha256sum f1 … f{hr.files}`, one process", mb["serial_tool"]),
        (b, ratio("parallel_py", "serial_tool"), "> 1x"),
        *([("reference: `openssl dgst -sha256 f1 … fN`", mb["openssl"])] if mb["openssl"] else []),
        (f"`hash_files` ÷ `sha256_file` (parallel speed-up, {hr.workers} cores)",
         ratio("parallel_py", "single_py"), "—"),
    ]  # fmt: skip
    rows = []
    for label, value, *target in specs:
        if isinstance(value, list):
            rows.append([*h.stat_row(label, value, 0), "—", "—"])
        else:
            limit = {"≥ 0.9x": HASH_RATIO_TARGET, "> 1x": 1.0000001}.get(target[0])
            ok = None if value is None or limit is None else value >= limit
            rows.append([label, "", f"{fmt(value, 2)}x", "", "", target[0], h.verdict(ok)])
    total = hr.files * hr.file_bytes / MB
    return [
        "### 1. Hashing throughput",
        "",
        f"{hr.files} files of {hr.file_bytes // MIB} MiB of random bytes ({total:,.0f} MB)"
        f"{' — ' + hr.note if hr.note else ''}, page cache warm. {len(mb['single_py'])} rounds; "
        "a round's figure is total bytes ÷ total wall time (MB = 10⁶ bytes); `sha256sum` runs "
        "as a subprocess (start-up included); digests are cross-checked.",
        "",
        h.table(("measurement", "n", "median MB/s", "min", "max", "target", "result"), rows),
        "",
        *(f"- ⚠ {m}" for m in hr.mismatches),
    ]


def import_section(
    args: argparse.Namespace, lib: LibraryFacts, imports: list[ImportResult]
) -> list[str]:
    rows = []
    for r in imports:
        rates = [r.files / s for s in r.import_seconds]
        rows.append([*h.stat_row(f"first import of {r.files:,} files, files/s", rates, 0)])
        rows.append([*h.stat_row("first import, seconds", r.import_seconds, 2)])
        rows[-2:] = [[row[0], h.LABELS[r.backend], *row[1:], "—", "—"] for row in rows[-2:]]
    for r in imports:
        med = median(r.rescan_seconds)
        ok = None if med is None else med <= RESCAN_TARGET_S and not r.anomalies
        row = h.stat_row(f"rescan of the unchanged {r.files:,}, seconds", r.rescan_seconds, 2)
        rows.append([row[0], h.LABELS[r.backend], *row[1:], f"≤ {RESCAN_TARGET_S:g} s"])
        rows[-1].append(h.verdict(ok))
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


API_HEAD = ("query", "database", "matches", "n", "HTTP p50", "HTTP p99", "HTTP max", "repo p50")
API_HEAD += ("SQL count p50", "SQL page p50", "target p99", "result")


def api_section(args: argparse.Namespace, apis: list[ApiResult]) -> list[str]:
    def row(label: str, x: ApiResult, values: list[float], matches: str, *rest: str) -> list[str]:
        r = h.latency_row(label, values, 99)
        return [r[0], h.LABELS[x.backend], matches, *r[1:], *(rest or ["—"] * 5)]

    rows = [row("baseline: `GET /health/live` (no database)", x, x.baseline, "—") for x in apis]
    for key in [q.key for q in api_queries(args.adapters)]:
        for x in apis:
            r = next(r for r in x.queries if r.query.key == key)
            sql = [fmt_ms(median(v)) for v in (r.repo, r.sql_count, r.sql_page)]
            target, matches = f"≤ {API_P99_TARGET_MS:g} ms", f"{r.total or 0:,}"
            rows.append(row(r.query.label, x, r.http, matches, *sql, target, h.verdict(r.passed())))
            rows[-1][3] += " (budget)" if r.budget_hit else ""
    loads = "; ".join(
        f"{h.LABELS[x.backend]} {x.load.seconds:.1f} s ({x.load.adapters / x.load.seconds:,.0f}"
        f" adapters/s, {x.load.tags:,} tag rows) + ANALYZE {x.load.analyze_seconds:.1f} s"
        for x in apis
    )
    lines = [
        f"### 3. `GET /v1/adapters` with {args.adapters:,} adapters",
        "",
        "Adapters generated deterministically and bulk-loaded with Core, with what "
        f"`replace_tags` and `refresh_search` write: {loads}. One in-process "
        "`TestClient(create_app(settings, migrate_on_startup=False))`, default sort and page "
        f"size; {WARMUP_REQUESTS} untimed requests per query, then {args.requests} timed ones "
        "in blocks of 20, query after query. *repo* is `repository.list_adapters` alone; *SQL "
        "count/page* its two statements on a raw driver cursor; *matches* the answer's "
        "checked `total`. Times in ms; the target is judged on HTTP p99.",
        "",
        h.table(API_HEAD, rows),
        "",
    ]
    for x in apis:
        lines += [
            f"- ⚠ {h.LABELS[x.backend]}, {r.query.label}: {e}" for r in x.queries for e in r.errors
        ]
    shown = [(x, r) for x in apis for r in x.queries if args.plans or r.passed() is False]
    if shown:
        lines += ["Plans (SQLite: `EXPLAIN QUERY PLAN`; PostgreSQL: `EXPLAIN (ANALYZE, "
                  "BUFFERS)`) of the queries shown:", ""]  # fmt: skip
    for x, r in shown:
        lines.append(f"<details><summary>{h.LABELS[x.backend]}, {r.query.label}</summary>\n")
        for statement, plan in r.plans:
            kind = "count" if is_count(statement) else "page"
            lines += [f"{kind}:", "", "```", plan, "```", ""]
        lines += ["</details>", ""]
    return lines


def summary(hr: HashResult | None, imports: list[ImportResult], apis: list[ApiResult]) -> str:
    parts: list[str] = []
    if hr:
        parts.append(
            f"Hashing: `sha256_file` runs at {fmt(hr.ratio('single_py', 'single_tool'), 2)}x "
            "`sha256sum` one file at a time and `hash_files` at "
            f"{fmt(hr.ratio('parallel_py', 'serial_tool'), 2)}x `sha256sum f1 … fN`; `openssl "
            f"dgst` reaches {fmt(median(hr.mbps['openssl']), 0)} MB/s on one core (coreutils' "
            "portable SHA-256 against OpenSSL's, which hashlib uses)."
        )
    for r in imports:
        med = median(r.rescan_seconds)
        parts.append(
            f"{h.LABELS[r.backend]}: first import "
            f"{fmt(median([r.files / s for s in r.import_seconds]), 0)} files/s, rescan "
            f"{fmt(med, 2)} s ({'within' if med and med <= RESCAN_TARGET_S else 'over'} target)."
        )
    for x in apis:
        fails = [
            f"{r.query.key} (p50 {fmt_ms(median(r.http))} ms)"
            for r in x.queries
            if r.passed() is False
        ]
        gap = median([(median(r.http) or 0) - (median(r.repo) or 0) for r in x.queries])
        parts.append(
            f"{h.LABELS[x.backend]} API: "
            + ("over target: " + ", ".join(fails) if fails else "every query within p99 ≤ 50 ms")
            + f"; HTTP p50 minus repository p50 is about {fmt_ms(gap)} ms per request, of which "
            f"{fmt_ms(median(x.baseline))} ms is the bare HTTP stack (`/health/live`)."
        )
    return " ".join([*parts, "The machine is shared: compare medians."])


def measure(args: argparse.Namespace, res: h.Resources) -> tuple[str, list[str]]:
    server = None
    if "postgresql" in args.backends and {"import", "api"} & set(args.parts):
        say("starting a throwaway PostgreSQL server")
        server = res.postgres()
    databases = h.Databases(res.root, server)
    hr, imports, apis = None, list[ImportResult](), list[ApiResult]()
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
