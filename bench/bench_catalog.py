"""Benchmark the catalog and the importer (issue 3) on SQLite and PostgreSQL.

1. Hashing throughput on a folder of large random files, page cache warm, against
   `sha256sum` on the same files in the same run: (a) `sha256_file` one file at a time vs
   `sha256sum FILE` one file at a time; (b) `hash_files` on a thread pool (one worker per
   core) vs `sha256sum f1 f2 ...` in one process. MB/s, median over rounds.
2. First import of a generated library (10,000 small safetensors files, each with a
   `.civitai.info` and an A1111 `.json`) into a fresh database, in files/s; then rescans of
   the unchanged library, in seconds. Generating the library is not timed.
3. `GET /v1/adapters` with 100,000 adapters bulk-loaded with SQLAlchemy Core: p50/p99 through
   the real HTTP stack in-process (`TestClient(create_app(...))`), for the first page, a text
   search, a two-word prefix search, a tag filter and a deep page; the same queries' p50 at
   the repository level and the SQL execute time of their two statements (count and page);
   the query plan of every statement of a query that misses its target.

    .venv/bin/python bench/bench_catalog.py [--quick] [--out docs/benchmarks.md]

Every temporary file, database and PostgreSQL cluster lives under one temporary directory
that is removed on exit, including Ctrl-C and SIGTERM; every step has a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import logging
import os
import random
import shlex
import shutil
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_migrations import (  # noqa: E402
    BenchError,
    Cleanup,
    deferred_signals,
    invocation,
    load_average,
    machine_facts,
    postgres_version,
    run_bench,
    say,
    wait_bounded,
)
from sqlalchemy import Engine, event, insert, text  # noqa: E402

from tests.support.postgres import PostgresServer  # noqa: E402

SECTION_TITLE = "## Catalog and import (issue 3)"
BACKEND_LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
PARTS = ("hash", "import", "api")
MB = 1_000_000  # throughput in MB/s of 10^6 bytes, as sha256sum-style tools report it
MIB = 1024 * 1024
HASH_RATIO_TARGET = 0.9  # (a): sha256_file ≥ 0.9 x sha256sum, one file at a time
RESCAN_TARGET_S = 2.0
API_P99_TARGET_MS = 50.0
MIN_REQUESTS = 50  # a query over its time budget still gets this many requests
REPO_REPEATS = 50  # repository-level calls per query
WARMUP_REQUESTS = 5
STEP_TIMEOUT_SUBPROCESS = 600.0

log = logging.getLogger("bench_catalog")


class StepTimeout(BenchError):
    """A step overran its time limit."""


@contextlib.contextmanager
def time_limit(what: str, seconds: float) -> Iterator[None]:
    """Bound an in-process step (main thread only): after `seconds` a SIGALRM raises
    StepTimeout at the next Python instruction. Nests: an outer limit keeps counting."""

    def expire(_signum: int, _frame: Any) -> None:
        raise StepTimeout(f"{what}: still running after {seconds:g}s")

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, expire)
    outer_left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    if outer_left and outer_left < seconds:
        signal.setitimer(signal.ITIMER_REAL, outer_left)  # the outer limit comes first
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if outer_left:
            left = outer_left - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


class Resources(Cleanup):
    """bench_migrations' cleanup (processes, PostgreSQL servers, the temp root) plus the
    SQLAlchemy engines this benchmark opens, disposed before the servers stop."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.engines: list[Engine] = []

    def engine(self, settings: Any) -> Engine:
        from lora_manager.core.db import make_engine

        engine = make_engine(settings)
        self.engines.append(engine)
        return engine

    def dispose(self, engine: Engine) -> None:
        engine.dispose()
        with contextlib.suppress(ValueError):
            self.engines.remove(engine)

    def close(self) -> None:
        with deferred_signals(reraise=False):
            for engine in self.engines:
                with contextlib.suppress(Exception):
                    engine.dispose()
            self.engines.clear()
        super().close()


# -- statistics ----------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], pct: int) -> float | None:
    """Interpolated percentile (inclusive method); None below two samples."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_ms(seconds: float | None) -> str:
    return "—" if seconds is None else fmt(seconds * 1000)


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("pass" if ok else "FAIL")


# -- settings and databases ----------------------------------------------------------------


def scrub_environment(root: Path) -> None:
    """No LoRA Manager setting from the caller's environment or a .env file reaches us."""
    from lora_manager.core.config import ENV_FILE_VARIABLE, Settings

    names = {name.upper() for name in Settings.model_fields}
    for key in list(os.environ):
        if key.upper() in names:
            del os.environ[key]
    os.environ[ENV_FILE_VARIABLE] = str(root / "no-such.env")


def make_settings(database_url: str, **overrides: Any) -> Any:
    from lora_manager.core.config import Settings

    values: dict[str, Any] = {
        "database_url": database_url,
        "sqlite_backup_keep": 0,
        "db_wait_timeout": 15,
        "migration_lock_timeout": 30,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Databases:
    """Fresh, migrated databases on demand: SQLite files under the root, PostgreSQL ones on
    one throwaway cluster."""

    root: Path
    server: PostgresServer | None
    counter: int = 0

    def fresh(self, backend: str, label: str) -> str:
        self.counter += 1
        if backend == "sqlite":
            folder = self.root / "db" / f"{self.counter:03d}-{label}"
            folder.mkdir(parents=True)
            url = f"sqlite:///{folder / 'catalog.db'}"
        else:
            assert self.server is not None
            url = self.server.create_database(f"bench_{label.replace('-', '_')}")
        from lora_manager.core.migrations import MigrationRunner

        with time_limit(f"migrating a fresh {backend} database", 120):
            MigrationRunner(make_settings(url)).upgrade("head")
        return url


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


class Tools:
    """Runs external tools (sha256sum, openssl) as registered, bounded subprocesses."""

    def __init__(self, resources: Resources, timeout: float) -> None:
        self.resources = resources
        self.timeout = timeout
        self.counter = 0

    def run(self, argv: list[str]) -> tuple[float, str]:
        """Wall seconds (fork/exec included) and stdout of one run; raises on failure."""
        self.counter += 1
        out_path = self.resources.root / "logs" / f"{self.counter:04d}-{Path(argv[0]).name}.out"
        out_path.parent.mkdir(exist_ok=True)
        with out_path.open("wb") as out:
            started = time.perf_counter()
            proc = self.resources.spawn(argv, dict(os.environ), out)
            code, expired = wait_bounded(proc, self.timeout)
            elapsed = time.perf_counter() - started
            self.resources.stop(proc)
        output = out_path.read_text(errors="replace")
        if expired:
            raise BenchError(f"{shlex.join(argv)}: still running after {self.timeout:g}s")
        if code != 0:
            raise BenchError(f"{shlex.join(argv)}: exit code {code}\n{output[-2000:]}")
        return elapsed, output


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


def bench_hashing(args: argparse.Namespace, resources: Resources) -> HashResult:
    from lora_manager.ingest.hashing import hash_files, sha256_file

    tools = Tools(resources, args.timeout)
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
                elapsed, output = tools.run(["sha256sum", name])
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
            elapsed, output = tools.run(["sha256sum", *names])
            for name in names:
                _compare(result, name, digests, output)
            serial_tool = total / elapsed / MB
            if openssl:
                elapsed, _ = tools.run([openssl, "dgst", "-sha256", *names])
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


def run_import(url: str, library: Path, resources: Resources, timeout: float, what: str) -> Any:
    """One `Importer.run` on a new engine; its summary gets `seconds_measured`, the exact wall
    time of the call (the summary's own `seconds` is rounded)."""
    from lora_manager.core.db import make_session_factory
    from lora_manager.ingest.service import Importer

    settings = make_settings(url, lora_roots=[library])
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
    args: argparse.Namespace, resources: Resources, databases: Databases, backends: list[str]
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


def adapter_rows(count: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`count` realistic adapter rows, deterministic for a seed, with all columns set."""
    rng = random.Random(seed)
    vocabulary = filler_vocabulary(rng, 3000)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    cumulative = list(_accumulate(weights))
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
        yield {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "name": name,
            "version": version,
            "tags": tags,
            "file_path": path,
            "weight": 1.0,
            "active": active,
            "ordinal": i // 100 if active else None,
            "archetype": None,
            "archetype_confidence": None,
            "created_at": created,
            "updated_at": updated,
            "canonical_version_name": version,
            "description": description,
            "author_username": rng.choice(authors),
            "visibility": "Public",
            "published_at": created - timedelta(days=rng.randint(1, 300)),
            "trained_words": trained,
            "triggers": trained,
            "primary_file_name": f"{slug}.safetensors",
            "primary_file_size_kb": size // 1024,
            "primary_file_sha256": sha,
            "primary_file_download_url": f"https://civitai.com/api/download/models/{100000 + i}",
            "primary_file_local_path": path,
            "supports_generation": False,
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
            "favorite_updated_at": None,
            "rating": rng.randint(1, 5) if rng.random() < 0.1 else None,
            "rating_updated_at": None,
            "notes": None,
            "user_tags": user_tags,
            "base_model": base_model,
            "preferred_weight": 0.8,
            "download_count": downloads,
            "sha256": sha,
            "autov2": sha[:10].upper(),
            "tensor_sha256": None,
            "declared_sha256": None,
            "file_size": size,
            "file_mtime_ns": mtime_ns,
            "real_path": path,
            "library_root": "/library/loras",
            "file_format": "safetensors",
            "preview_path": path.replace(".safetensors", ".preview.png")
            if rng.random() < 0.7
            else None,
            "sidecar_state": {f"{slug}.civitai.info": [12345, mtime_ns]},
            "ingest_status": status,
            "ingest_error": "header: file too short" if status == "error" else None,
            "missing_since": updated if status == "missing" else None,
            "search_text": None,
        }


def _accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


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
    args: argparse.Namespace, resources: Resources, databases: Databases, backend: str
) -> ApiResult:
    from fastapi.testclient import TestClient

    from lora_manager.api.app import create_app
    from lora_manager.catalog import repository

    url = databases.fresh(backend, "api")
    settings = make_settings(url)
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
    baseline: list[float] = []
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
        for _ in range(args.requests):  # the HTTP stack alone: no database, tiny answer
            t0 = time.perf_counter()
            client.get("/health/live")
            baseline.append(time.perf_counter() - t0)
        say(f"api: {args.requests} requests per query on {backend}")
        spent = dict.fromkeys((r.query.key for r in results), 0.0)
        block = 20
        with time_limit(f"{backend} HTTP requests", args.timeout * 2):
            while True:
                pending = [
                    r
                    for r in results
                    if len(r.http) < args.requests
                    and not (spent[r.query.key] > args.query_budget and len(r.http) >= MIN_REQUESTS)
                ]
                if not pending:
                    break
                for res in pending:  # blocks of requests, query after query
                    target = res.query.url()
                    for _ in range(min(block, args.requests - len(res.http))):
                        t0 = time.perf_counter()
                        reply = client.get(target)
                        elapsed = time.perf_counter() - t0
                        if reply.status_code != 200:
                            raise BenchError(f"{target}: HTTP {reply.status_code}")
                        res.http.append(elapsed)
                        spent[res.query.key] += elapsed
        for res in results:
            res.budget_hit = len(res.http) < args.requests
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


@dataclass
class Report:
    facts: dict[str, str]
    command: str
    args: argparse.Namespace
    load_before: str
    load_after: str = ""
    minutes: float = 0.0
    hashing: HashResult | None = None
    library: LibraryFacts | None = None
    imports: list[ImportResult] = field(default_factory=list)
    api: list[ApiResult] = field(default_factory=list)

    # -- rows -------------------------------------------------------------------------

    HASH_HEAD = ("measurement", "n", "median MB/s", "min", "max", "target", "result")

    def hash_rows(self) -> list[list[str]]:
        h = self.hashing
        assert h is not None
        rows = []

        def row(label: str, values: list[float], target: str = "—", ok: bool | None = None) -> None:
            rows.append(
                [
                    label,
                    str(len(values)),
                    fmt(median(values), 0),
                    fmt(min(values) if values else None, 0),
                    fmt(max(values) if values else None, 0),
                    target,
                    verdict(ok),
                ]
            )

        ratio_a = h.ratio_single()
        ratio_b = h.ratio_parallel()
        row("(a) `sha256_file`, one file at a time", h.single_py)
        row("(a) `sha256sum FILE`, one file at a time", h.single_tool)
        rows.append(
            [
                "(a) ratio `sha256_file` ÷ `sha256sum`",
                "",
                fmt(ratio_a, 2) + "x" if ratio_a else "—",
                "",
                "",
                f"≥ {HASH_RATIO_TARGET}x",
                verdict(None if ratio_a is None else ratio_a >= HASH_RATIO_TARGET),
            ]
        )
        row(f"(b) `hash_files`, {h.workers} workers", h.parallel_py)
        row(f"(b) `sha256sum f1 … f{h.files}`, one process", h.serial_tool)
        rows.append(
            [
                "(b) ratio `hash_files` ÷ `sha256sum f1 … fN`",
                "",
                fmt(ratio_b, 2) + "x" if ratio_b else "—",
                "",
                "",
                "> 1x",
                verdict(None if ratio_b is None else ratio_b > 1),
            ]
        )
        if h.openssl:
            row("reference: `openssl dgst -sha256 f1 … fN`", h.openssl)
        speedup = (
            median(h.parallel_py) / median(h.single_py)  # type: ignore[operator]
            if h.parallel_py and h.single_py
            else None
        )
        rows.append(
            [
                f"`hash_files` ÷ `sha256_file` (parallel speed-up, {h.workers} cores)",
                "",
                fmt(speedup, 2) + "x" if speedup else "—",
                "",
                "",
                "—",
                "—",
            ]
        )
        return rows

    IMPORT_HEAD = ("measurement", "database", "n", "median", "min", "max", "target", "result")

    def import_rows(self) -> list[list[str]]:
        rows = []
        for res in self.imports:
            db = BACKEND_LABELS[res.backend]
            rate = res.files_per_second()
            rows.append(
                [
                    f"first import of {res.files:,} files, files/s",
                    db,
                    str(len(rate)),
                    fmt(median(rate), 0),
                    fmt(min(rate) if rate else None, 0),
                    fmt(max(rate) if rate else None, 0),
                    "—",
                    "—",
                ]
            )
            rows.append(
                [
                    "first import, seconds",
                    db,
                    str(len(res.import_seconds)),
                    fmt(median(res.import_seconds), 2),
                    fmt(min(res.import_seconds) if rate else None, 2),
                    fmt(max(res.import_seconds) if rate else None, 2),
                    "—",
                    "—",
                ]
            )
        for res in self.imports:
            db = BACKEND_LABELS[res.backend]
            sec = res.rescan_seconds
            med = median(sec)
            rows.append(
                [
                    f"rescan of the unchanged {res.files:,}, seconds",
                    db,
                    str(len(sec)),
                    fmt(med, 2),
                    fmt(min(sec) if sec else None, 2),
                    fmt(max(sec) if sec else None, 2),
                    f"≤ {RESCAN_TARGET_S:g} s",
                    verdict(None if med is None else med <= RESCAN_TARGET_S and not res.anomalies),
                ]
            )
        return rows

    API_HEAD = (
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
    )

    def api_rows(self) -> list[list[str]]:
        rows = [
            [
                "baseline: `GET /health/live` (no database)",
                BACKEND_LABELS[api.backend],
                "—",
                str(len(api.baseline)),
                fmt_ms(median(api.baseline)),
                fmt_ms(percentile(api.baseline, 99)),
                fmt_ms(max(api.baseline) if api.baseline else None),
                *["—"] * 5,
            ]
            for api in self.api
        ]
        for key in [q.key for q in api_queries(self.args.adapters)]:
            for api in self.api:
                res = next(r for r in api.queries if r.query.key == key)
                rows.append(
                    [
                        res.query.label,
                        BACKEND_LABELS[api.backend],
                        f"{res.total:,}" if res.total is not None else "—",
                        str(len(res.http)) + (" (budget)" if res.budget_hit else ""),
                        fmt_ms(median(res.http)),
                        fmt_ms(percentile(res.http, 99)),
                        fmt_ms(max(res.http) if res.http else None),
                        fmt_ms(median(res.repo)),
                        fmt_ms(median(res.sql_count)),
                        fmt_ms(median(res.sql_page)),
                        f"≤ {API_P99_TARGET_MS:g} ms",
                        verdict(res.passed()),
                    ]
                )
        return rows

    def failing_queries(self) -> list[tuple[ApiResult, QueryResult]]:
        return [(a, r) for a in self.api for r in a.queries if r.passed() is False]

    # -- text ---------------------------------------------------------------------------

    def text(self) -> str:
        f = self.facts
        out = [
            f"Catalog and import benchmark — {f['date']}",
            f"{f['nproc']} CPUs ({f['cpu']}), {f['memory']}, {f['python']}, {f['postgres']}; "
            f"load avg before {self.load_before}, after {self.load_after}; "
            f"{self.minutes:.1f} min",
        ]
        if self.hashing:
            h = self.hashing
            out += [
                "",
                f"1. Hashing {h.files} files x {h.file_bytes // MIB} MiB, page cache warm, "
                f"{h.rounds} rounds" + (f" ({h.note})" if h.note else ""),
                _text_table(self.HASH_HEAD, self.hash_rows()),
            ]
            out += [f"   ! {m}" for m in h.mismatches]
        if self.imports and self.library:
            out += [
                "",
                f"2. Import of {self.library.files:,} models + {self.library.sidecars:,} "
                f"sidecars ({self.library.bytes / MB:.1f} MB; generated in "
                f"{self.library.seconds:.1f} s, not timed)",
                _text_table(self.IMPORT_HEAD, self.import_rows()),
            ]
            out += [f"   ! {r.backend}: {a}" for r in self.imports for a in r.anomalies]
        if self.api:
            loads = "; ".join(
                f"{BACKEND_LABELS[a.backend]} {a.load.seconds:.1f} s + ANALYZE "
                f"{a.load.analyze_seconds:.1f} s"
                for a in self.api
            )
            out += [
                "",
                f"3. GET /v1/adapters with {self.args.adapters:,} adapters (bulk load: {loads}); "
                "times in ms",
                _text_table(self.API_HEAD, self.api_rows()),
            ]
            out += [
                f"   ! {BACKEND_LABELS[a.backend]} {r.query.key}: {e}"
                for a in self.api
                for r in a.queries
                for e in r.errors
            ]
            shown = (
                [(a, r) for a in self.api for r in a.queries]
                if self.args.plans
                else self.failing_queries()
            )
            for api, res in shown:
                out.append(f"\nPlans — {BACKEND_LABELS[api.backend]}, {res.query.label}:")
                for statement, plan in res.plans:
                    kind = "count" if is_count(statement) else "page"
                    out.append(f"  [{kind}] " + plan.replace("\n", "\n  " + " " * (len(kind) + 3)))
        return "\n".join(out)

    # -- markdown -----------------------------------------------------------------------

    def markdown(self) -> str:
        f = self.facts
        a = self.args
        lines = [
            SECTION_TITLE,
            "",
            f"- **Date:** {f['date']}",
            f"- **Machine:** {f['nproc']} CPUs ({f['cpu']}), {f['memory']} RAM, {f['os']}; "
            f"load average (1/5/15 min) {self.load_before} before, {self.load_after} after "
            f"({self.minutes:.1f} min run)",
            f"- **Software:** {f['python']}, {f['postgres']} (throwaway local cluster, fsync "
            "off), SQLite " + _sqlite_version(),
            f"- **Command:** `{self.command}`",
            "",
        ]
        if self.hashing:
            h = self.hashing
            lines += [
                "### 1. Hashing throughput",
                "",
                f"{h.files} files of {h.file_bytes // MIB} MiB of random bytes "
                f"({h.total_bytes / MB:,.0f} MB){' — ' + h.note if h.note else ''}, each read "
                f"once before timing (page cache warm). {h.rounds} rounds; per round each "
                "figure is total bytes ÷ total wall time (MB = 10⁶ bytes). `sha256sum` runs as "
                "a subprocess (its start-up, ~1 ms, is included); digests are cross-checked. "
                "Targets are judged on the ratio of the medians.",
                "",
                _md_table(self.HASH_HEAD, self.hash_rows()),
                "",
            ]
            lines += [f"- ⚠ {m}" for m in h.mismatches]
        if self.imports and self.library:
            lib = self.library
            lines += [
                "### 2. First import and rescan",
                "",
                f"`build_bulk_library(root, {lib.files})`: {lib.files:,} safetensors models "
                f"with {lib.sidecars:,} sidecars (a `.civitai.info` and an A1111 `.json` each), "
                f"{lib.bytes / MB:.1f} MB in {lib.files // 250 or 1} folders; generated once in "
                f"{lib.seconds:.1f} s (not timed) and in the page cache. `Importer(settings, "
                "session_factory).run([root])` in-process with default settings (hashing "
                f"workers = cores), wall time of the call. {a.rounds} rounds after an untimed "
                f"warm-up import of 200 models per database; each round imports into a new, "
                f"migrated database per backend, then rescans the unchanged library "
                f"{a.rescans} time(s). Every summary is checked (all new, then all unchanged).",
                "",
                _md_table(self.IMPORT_HEAD, self.import_rows()),
                "",
            ]
            lines += [
                f"- ⚠ {BACKEND_LABELS[r.backend]}: {x}" for r in self.imports for x in r.anomalies
            ]
        if self.api:
            loads = "; ".join(
                f"{BACKEND_LABELS[x.backend]} {x.load.seconds:.1f} s "
                f"({x.load.adapters / x.load.seconds:,.0f} adapters/s, {x.load.tags:,} tag rows)"
                f" + {'ANALYZE' if x.backend == 'sqlite' else 'VACUUM ANALYZE'} "
                f"{x.load.analyze_seconds:.1f} s"
                for x in self.api
            )
            lines += [
                f"### 3. `GET /v1/adapters` with {a.adapters:,} adapters",
                "",
                f"{a.adapters:,} adapters with realistic names, descriptions (25 to 90 words), "
                "tags, triggers and base models, bulk-loaded with SQLAlchemy Core executemany "
                "in one transaction together with their `adaptertag` rows, `search_text` "
                "(`build_search_text` of a stand-in carrying every column, checked equal to an "
                "unsaved `Adapter`'s) and, on SQLite, `adapter_fts` "
                f"rows — what `replace_tags` and `refresh_search` write. Load: {loads}. "
                "Requests go through the whole HTTP stack in-process: one "
                "`TestClient(create_app(settings, migrate_on_startup=False))`, default sort "
                f"(name) and page size (50); {WARMUP_REQUESTS} untimed requests per query, "
                f"then {a.requests} timed ones per query in blocks of 20, query after query "
                f"(a query over {a.query_budget:g} s stops at ≥ {MIN_REQUESTS}). *repo* is "
                "`repository.list_adapters` alone on the app's engine (new session per call, "
                f"{min(REPO_REPEATS, a.requests)} calls); *SQL count/page* are its two "
                "statements alone, as captured from it, run with `execute` + `fetchall` on a "
                "raw driver cursor (the database and driver share, without the ORM). "
                "*matches* is the `total` of the answer, checked against the generated data. "
                "The baseline row is the HTTP stack and the test client alone. Times in ms; "
                "the target is judged on HTTP p99.",
                "",
                _md_table(self.API_HEAD, self.api_rows()),
                "",
            ]
            lines += [
                f"- ⚠ {BACKEND_LABELS[x.backend]}, {r.query.label}: {e}"
                for x in self.api
                for r in x.queries
                for e in r.errors
            ]
            failing = self.failing_queries()
            if failing:
                lines += [
                    "Plans of the statements of each query that misses its target "
                    "(SQLite: `EXPLAIN QUERY PLAN`; PostgreSQL: `EXPLAIN (ANALYZE, BUFFERS)`):",
                    "",
                ]
                for api, res in failing:
                    lines.append(
                        f"<details><summary>{BACKEND_LABELS[api.backend]}, "
                        f"{res.query.label}</summary>\n"
                    )
                    for statement, plan in res.plans:
                        kind = "count" if is_count(statement) else "page"
                        lines += [f"{kind}:", "", "```", plan, "```", ""]
                    lines += ["</details>", ""]
        lines += [self.summary(), ""]
        return "\n".join(lines)

    def summary(self) -> str:
        parts: list[str] = []
        if self.hashing:
            h = self.hashing
            ra, rb = h.ratio_single(), h.ratio_parallel()
            parts.append(
                f"Hashing: `sha256_file` runs at {fmt(ra, 2)}x `sha256sum` one file at a time "
                f"and `hash_files` at {fmt(rb, 2)}x `sha256sum f1 … fN`"
                + (
                    f"; `openssl dgst` reaches {fmt(median(h.openssl), 0)} MB/s on one core, so "
                    "the gap to `sha256sum` is coreutils' portable SHA-256 against OpenSSL's "
                    "(SHA extensions), which hashlib uses."
                    if h.openssl
                    else "."
                )
            )
        for res in self.imports:
            med = median(res.rescan_seconds)
            rate = median(res.files_per_second())
            parts.append(
                f"{BACKEND_LABELS[res.backend]}: first import {fmt(rate, 0)} files/s, "
                f"rescan {fmt(med, 2)} s "
                f"({'within' if med is not None and med <= RESCAN_TARGET_S else 'over'} "
                f"the {RESCAN_TARGET_S:g} s target)."
            )
        for api in self.api:
            fails = [r for r in api.queries if r.passed() is False]
            http_minus_repo = [
                (median(r.http) or 0) - (median(r.repo) or 0) for r in api.queries if r.repo
            ]
            overhead = median(http_minus_repo)
            described = []
            for r in fails:
                p50 = (median(r.http) or 0) * 1000
                kind = "tail only" if p50 <= API_P99_TARGET_MS / 2 else "slow throughout"
                described.append(f"{r.query.key} (p50 {p50:.0f} ms, {kind})")
            text_ = (
                f"{BACKEND_LABELS[api.backend]} API: "
                + (
                    "every query within p99 ≤ 50 ms"
                    if not fails
                    else "over target: " + ", ".join(described)
                )
                + f"; HTTP p50 minus repository p50 (routing, validation, serialisation of 50 "
                f"adapters) is about {fmt_ms(overhead)} ms per request, of which "
                f"{fmt_ms(median(api.baseline))} ms is the bare HTTP stack (`/health/live`)."
            )
            parts.append(text_)
        parts.append(
            "The machine is shared: compare medians; p99 of a few hundred requests includes "
            "other work's interference."
        )
        return " ".join(parts)


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _text_table(head: tuple[str, ...], rows: list[list[str]]) -> str:
    head_ = [h.replace("`", "") for h in head]
    rows_ = [[c.replace("`", "") for c in r] for r in rows]
    widths = [max(len(c) for c in column) for column in zip(head_, *rows_, strict=True)]
    left = {0, 1} if head and head[1] == "database" else {0}

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(head_), "  ".join("-" * w for w in widths), *(line(r) for r in rows_)])


def _md_table(head: tuple[str, ...], rows: list[list[str]]) -> str:
    left = {0, 1} if head and head[1] == "database" else {0}
    align = [
        "---" if i in left or h in {"target", "result", "target p99"} else "---:"
        for i, h in enumerate(head)
    ]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (~1-2 min)")
    parser.add_argument("--rounds", type=int, help="rounds of hashing and import (default 3)")
    parser.add_argument("--rescans", type=int, help="rescans per import round (default 2)")
    parser.add_argument("--hash-files", type=int, help="large files to hash (default 6)")
    parser.add_argument("--hash-mb", type=int, help="MiB per hashed file (default 256)")
    parser.add_argument("--files", type=int, help="models in the import library (default 10000)")
    parser.add_argument("--adapters", type=int, help="adapters for the API part (default 100000)")
    parser.add_argument("--requests", type=int, help="timed HTTP requests per query (default 200)")
    parser.add_argument(
        "--query-budget",
        type=float,
        default=60.0,
        help=f"seconds of requests per query before it stops at {MIN_REQUESTS} (default 60)",
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="hash,import,api (default all)")
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="sqlite, postgresql (default both)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds any single step may take"
    )
    parser.add_argument("--plans", action="store_true", help="print every query's plan")
    parser.add_argument("--out", type=Path, help="write/replace the section in this Markdown file")
    args = parser.parse_args(argv)
    defaults = (
        {"rounds": 2, "rescans": 1, "hash_files": 2, "hash_mb": 32, "files": 500}
        | {"adapters": 5000, "requests": 50}
        if args.quick
        else {"rounds": 3, "rescans": 2, "hash_files": 6, "hash_mb": 256, "files": 10_000}
        | {"adapters": 100_000, "requests": 200}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(args.parts) - set(PARTS) or not args.parts:
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    if set(args.backends) - set(BACKEND_LABELS) or not args.backends:
        parser.error("--backends: choose from sqlite, postgresql")
    for name in ("rounds", "rescans", "hash_files", "hash_mb", "files", "adapters", "requests"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")
    return run_bench(
        args,
        invocation(argv, __file__),
        prefix="lora-bench-catalog-",
        make_cleanup=Resources,
        measure=measure,
        title=SECTION_TITLE,
        prepare=scrub_environment,
    )


def measure(args: argparse.Namespace, resources: Resources, command: str) -> Report:
    started = time.monotonic()
    report = Report(
        facts=machine_facts(None), command=command, args=args, load_before=load_average()
    )
    server = None
    if "postgresql" in args.backends and ("import" in args.parts or "api" in args.parts):
        say("starting a throwaway PostgreSQL server")
        server = resources.postgres()
        report.facts["postgres"] = postgres_version(server)
    databases = Databases(resources.root, server)
    if "hash" in args.parts:
        report.hashing = bench_hashing(args, resources)
    if "import" in args.parts:
        report.library, report.imports = bench_import(args, resources, databases, args.backends)
        shutil.rmtree(resources.root / "library", ignore_errors=True)
    if "api" in args.parts:
        for backend in args.backends:
            report.api.append(bench_api(args, resources, databases, backend))
    report.load_after = load_average()
    report.minutes = (time.monotonic() - started) / 60
    return report


if __name__ == "__main__":
    sys.exit(main())
