"""Recommendations end to end: /v1/recommendations on real databases.

Embeddings are computed in-process with `embed_adapters` and the light embedder, or by real
`lora-manager worker` processes (SQLite queue and Redis) for the recompute and import paths.
Quality is judged on the family library of `tests.support.families` (precision@5 of
`similar`); exact behaviour (filters, triggers, every ranking boost) on small hand-made
catalogs where the expected answer is known. Every answer is checked against the
`recommendationsession` row it recorded. The index re-checks the table on every request
(RECOMMENDATION_INDEX_CHECK=0), so a recompute shows at once.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from lora_manager.api import create_app
from lora_manager.core.config import Settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.models import (
    Adapter,
    EmbeddingRun,
    LoraEmbedding,
    RecommendationFeedback,
    RecommendationSession,
)
from lora_manager.ingest.service import Importer
from lora_manager.recommendations import ranking
from lora_manager.recommendations.embedders import HashedNgramEmbedder, make_embedder
from lora_manager.recommendations.embedding import EmbedCount, embed_adapters
from lora_manager.recommendations.service import refresh_after_import
from lora_manager.recommendations.text import adapter_text, normalize_trigger, source_hash
from tests.support.apps import app_settings
from tests.support.families import FAMILIES, LibraryEntry, insert_library, precision_at_k
from tests.support.library import build_bulk_library
from tests.support.ml import requires_ml
from tests.support.orm import edit_row
from tests.support.templates import MigratedTemplates
from tests.support.workers import WorkerProcess, running_worker, wait_until, worker_env

PREFIX = "/v1/recommendations"
API_KEY = "rec-test-key-42"
LIGHT = HashedNgramEmbedder()
# The largest gap in similarity the boost tests accept between their two near-tied
# candidates: below every single boost (LIKED, 0.04, is the smallest).
TIE_GAP = 0.03
# From queued to finished for one embedding run of a small library, worker start included.
RUN_TIMEOUT = 60.0
# The app is built without settings from the environment, for the whole module.
pytestmark = pytest.mark.usefixtures("clean_environment")


# --- helpers ----------------------------------------------------------------------------------


# The issue sets 0.8 for the light embedder and asks the semantic one's figure to be reported;
# it measured 0.90 here (26 families x 6, seed 11), so it is held to the same bar.
SEMANTIC_PRECISION_FLOOR = 0.8


def ids(answer: dict[str, Any]) -> list[str]:
    return [item["adapter_id"] for item in answer["items"]]


def item_of(answer: dict[str, Any], adapter_id: str) -> dict[str, Any]:
    for item in answer["items"]:
        if item["adapter_id"] == adapter_id:
            return item
    raise AssertionError(f"{adapter_id} not among {ids(answer)}")


@dataclass
class RecApi:
    """The app (no worker) on a migrated database, with the test's own engine on it."""

    client: TestClient
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    # -- the API ---------------------------------------------------------------------------

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.client.request(method, PREFIX + path, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json()

    def similar(self, adapter_id: str, expect: int = 200, **params: Any) -> Any:
        return self.call("GET", f"/similar/{adapter_id}", expect, params=params)

    def for_prompt(self, prompt: str, expect: int = 200, **body: Any) -> Any:
        return self.call("POST", "/for-prompt", expect, json={"prompt": prompt, **body})

    def by_trigger(self, q: str, expect: int = 200, **params: Any) -> Any:
        return self.call("GET", "/by-trigger", expect, params={"q": q, **params})

    def feedback(
        self, session_id: str, adapter_id: str, kind: str, expect: int = 201, **extra: Any
    ) -> Any:
        body = {"session_id": session_id, "adapter_id": adapter_id, "feedback": kind, **extra}
        return self.call("POST", "/feedback", expect, json=body)

    def put_preferences(self, preferences: list[dict[str, Any]], expect: int = 200) -> Any:
        return self.call("PUT", "/preferences", expect, json={"preferences": preferences})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/stats", 200)
        return result

    def recompute(self, expect: int = 202, **body: Any) -> Any:
        return self.call("POST", "/embeddings/recompute", expect, json=body)

    def run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/embeddings/runs/{run_id}", 200)
        return result

    def patch_adapter(self, adapter_id: str, **body: Any) -> None:
        response = self.client.patch(f"/v1/adapters/{adapter_id}", json=body)
        assert response.status_code == 200, response.text

    # -- the database ----------------------------------------------------------------------

    def embed(self, **options: Any) -> EmbedCount:
        return embed_adapters(self.sessions, make_embedder("light"), **options)

    def add(self, *adapters: Adapter) -> list[str]:
        with self.sessions() as session:
            session.add_all(adapters)
            session.commit()
            return [adapter.id for adapter in adapters]

    def update_adapter(self, adapter_id: str, **values: Any) -> None:
        edit_row(self.sessions, Adapter, adapter_id, **values)

    def embedding(self, adapter_id: str) -> LoraEmbedding | None:
        with self.sessions() as session:
            return session.get(LoraEmbedding, adapter_id)

    def count(self, model: type[Any]) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def assert_recorded(self, answer: dict[str, Any], kind: str, **context: Any) -> None:
        """The answer was recorded as a session whose suggestions are exactly its items."""
        with self.sessions() as session:
            row = session.get(RecommendationSession, answer["session_id"])
            assert row is not None, f"no recommendationsession {answer['session_id']}"
            assert row.recommendation_type == kind
            assert row.recommendations == answer["items"]
            for name, value in context.items():
                assert getattr(row, name) == value, name


@contextmanager
def open_api(url: str, folder: Path, **overrides: Any) -> Iterator[RecApi]:
    settings = app_settings(url, folder, **({"recommendation_index_check": 0} | overrides))
    engine = make_engine(settings)
    try:
        with TestClient(create_app(settings, migrate_on_startup=False)) as client:
            yield RecApi(client, settings, engine, make_session_factory(engine))
    finally:
        engine.dispose()


@dataclass
class Library:
    """A family library in a database, its vectors computed."""

    api: RecApi
    entries: list[LibraryEntry]
    family: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.family = {entry.id: entry.family for entry in self.entries}

    def of(self, family: str) -> list[LibraryEntry]:
        return [entry for entry in self.entries if entry.family == family]

    def share(self, found: list[str], family: str) -> float:
        return sum(self.family.get(adapter_id) == family for adapter_id in found) / len(found)

    def rich(self, family: str) -> list[LibraryEntry]:
        """The family's adapters that have triggers (the sparse, file-name-only ones have none)."""
        return [entry for entry in self.of(family) if entry.triggers]


@contextmanager
def open_library(
    url: str, folder: Path, per_family: int, seed: int = 7, **overrides: Any
) -> Iterator[Library]:
    with open_api(url, folder, **overrides) as api:
        entries = insert_library(api.engine, per_family=per_family, seed=seed)
        assert api.embed() == EmbedCount(computed=len(entries), unchanged=0)
        yield Library(api, entries)


def make_adapter(name: str, **fields: Any) -> Adapter:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    version = fields.pop("version", None)
    return Adapter(
        name=name,
        version=version,
        file_path=f"/loras/{slug}-{version or 'v1'}.safetensors",
        **fields,
    )


def looks_like_pickle(blob: bytes) -> bool:
    """A pickle (protocol 2+) opens with PROTO (0x80) and its version, and ends with STOP.
    A first byte of 0x80 alone proves nothing: it is a float32's lowest mantissa byte."""
    return (
        blob[:1] == b"\x80"
        and blob[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
        and (blob.endswith(b"."))
    )


def check_stored_vectors(api: RecApi) -> int:
    """Every stored vector is raw little-endian float32 of the light embedder, made from the
    adapter's current text; trigger vectors are base64 of the same. Returns the row count."""
    with api.sessions() as session:
        rows = session.execute(
            select(Adapter, LoraEmbedding).join(
                LoraEmbedding, LoraEmbedding.adapter_id == Adapter.id
            )
        ).all()
        for adapter, row in rows:
            blob = bytes(row.semantic_embedding)
            assert len(blob) == 4 * LIGHT.dim
            assert not looks_like_pickle(blob)
            text = adapter_text(adapter)
            expected = LIGHT.encode([text])[0]
            np.testing.assert_allclose(np.frombuffer(blob, dtype="<f4"), expected, atol=1e-6)
            assert (row.embedding_model, row.embedding_dim) == (LIGHT.name, LIGHT.dim)
            assert row.source_hash == source_hash(text, LIGHT.name)
            assert len(row.trigger_embeddings) == len(row.normalized_triggers)
            for encoded, word in zip(row.trigger_embeddings, row.normalized_triggers, strict=True):
                assert isinstance(encoded, str)
                raw = base64.b64decode(encoded, validate=True)
                assert len(raw) == 4 * LIGHT.dim
                assert not looks_like_pickle(raw)
                np.testing.assert_allclose(
                    np.frombuffer(raw, dtype="<f4"), LIGHT.encode([word])[0], atol=1e-6
                )
    return len(rows)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(
    templates: MigratedTemplates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Library]:
    """26 families x 12 adapters on SQLite, shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("library")
    url = f"sqlite:///{folder / 'lora.db'}"
    templates.fill(url)
    with open_library(url, folder, per_family=12) as opened:
        yield opened


@pytest.fixture
def small_library(migrated_sqlite_url: str, tmp_path: Path) -> Iterator[Library]:
    """26 families x 6 adapters on SQLite, for tests that change it."""
    with open_library(migrated_sqlite_url, tmp_path, per_family=6, seed=3) as opened:
        yield opened


@pytest.fixture
def api(migrated_sqlite_url: str, tmp_path: Path) -> Iterator[RecApi]:
    """The app on an empty migrated SQLite database."""
    with open_api(migrated_sqlite_url, tmp_path) as opened:
        yield opened


# --- 1. quality: precision@5 of `similar` on the family library ----------------------------


def similar_results(library: Library, queries: list[LibraryEntry]) -> dict[str, list[str]]:
    """`similar` (limit 5) of each query; every answer must have recorded its session."""
    recorded = library.api.count(RecommendationSession)
    results = {}
    for entry in queries:
        answer = library.api.similar(entry.id, limit=5)
        assert entry.id not in ids(answer)
        results[entry.id] = ids(answer)
    assert library.api.count(RecommendationSession) == recorded + len(queries)
    return results


def test_similar_precision_at_5_on_sqlite(
    library: Library, record_property: Callable[[str, Any], None]
) -> None:
    results = similar_results(library, library.entries)  # every adapter is a query
    precision = precision_at_k(results, library.entries, k=5)
    record_property("precision_at_5", round(precision, 4))
    print(f"precision@5 (SQLite, {len(library.entries)} queries): {precision:.4f}")
    assert precision >= 0.8


@requires_ml
def test_the_semantic_embedder_end_to_end_and_its_precision(
    migrated_sqlite_url: str, tmp_path: Path, record_property: Callable[[str, Any], None]
) -> None:
    """RECOMMENDATION_EMBEDDER=semantic: MiniLM vectors (384-d, from the [ml] extra; skipped
    without it) stored, indexed and searched through the API; precision reported."""
    with open_api(migrated_sqlite_url, tmp_path, recommendation_embedder="semantic") as api:
        entries = insert_library(api.engine, per_family=6, seed=11)
        counted = embed_adapters(api.sessions, make_embedder("semantic"), only=None)
        assert counted == EmbedCount(computed=len(entries), unchanged=0)
        stats = api.stats()
        assert (stats["model"], stats["dim"], stats["coverage"]) == (
            "sentence-transformers/all-MiniLM-L6-v2",
            384,
            1.0,
        )
        library = Library(api, entries)
        results = similar_results(library, entries)
        precision = precision_at_k(results, entries, k=5)
        record_property("semantic_precision_at_5", round(precision, 4))
        print(f"precision@5 (semantic, {len(entries)} queries): {precision:.4f}")
        assert precision >= SEMANTIC_PRECISION_FLOOR
        # A prompt is encoded by the same model in the API process.
        prompt = api.for_prompt("a painting made with a brush and black ink", active_adapter_ids=[])
        assert prompt["items"] and prompt["items"][0]["similarity"] > 0.2


def test_similar_precision_at_5_on_both_databases(
    db_url: str,
    templates: MigratedTemplates,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    record_property: Callable[[str, Any], None],
) -> None:
    templates.fill(db_url, request)
    with open_library(db_url, tmp_path, per_family=8, seed=11) as library:
        # A deterministic sample: the first three adapters of each family as queries.
        queries = [entry for family in FAMILIES for entry in library.of(family.key)[:3]]
        results = similar_results(library, queries)
        precision = precision_at_k(results, library.entries, k=5)
        record_property("precision_at_5", round(precision, 4))
        print(f"precision@5 ({make_url(db_url).get_backend_name()}): {precision:.4f}")
        assert precision >= 0.8
        # 10. what is stored is raw float32 on this database too
        assert check_stored_vectors(library.api) == len(library.entries)
        answer = library.api.similar(library.entries[0].id, limit=3)
        library.api.assert_recorded(answer, "similar", target_lora_id=library.entries[0].id)


# --- 2. similar: filters, limits and the recorded session -----------------------------------


def test_same_base_model_is_respected_and_can_be_turned_off(library: Library) -> None:
    query = library.rich("ink_wash")[0]
    assert query.base_model == "SDXL 1.0"
    same = library.api.similar(query.id, limit=60)
    assert len(same["items"]) == 60
    assert {item["base_model"] for item in same["items"]} == {"SDXL 1.0"}
    library.api.assert_recorded(same, "similar", target_lora_id=query.id)

    any_base = library.api.similar(query.id, limit=60, same_base_model="false")
    assert len(any_base["items"]) == 60
    assert {item["base_model"] for item in any_base["items"]} - {"SDXL 1.0"}
    library.api.assert_recorded(any_base, "similar", target_lora_id=query.id)


def test_exclude_leaves_adapters_out_and_the_rest_move_up(library: Library) -> None:
    query = library.rich("pixel_art")[0]
    baseline = library.api.similar(query.id, limit=8)
    left_out = ids(baseline)[:2]
    answer = library.api.similar(query.id, limit=6, exclude=left_out)
    assert ids(answer) == ids(baseline)[2:8]
    assert not set(left_out) & set(ids(answer))
    library.api.assert_recorded(answer, "similar", target_lora_id=query.id)
    # Excluding the query itself, or an id of no adapter, changes nothing.
    again = library.api.similar(query.id, limit=8, exclude=[query.id, "no-such-adapter"])
    assert ids(again) == ids(baseline)


def test_min_score_drops_less_similar_adapters(library: Library) -> None:
    query = library.rich("film_noir")[0]
    everything = library.api.similar(query.id, limit=100, min_score=-1)
    sims = sorted((item["similarity"] for item in everything["items"]), reverse=True)
    threshold = (sims[2] + sims[3]) / 2  # between the 3rd and 4th most similar
    answer = library.api.similar(query.id, limit=10, min_score=threshold)
    expected = [
        item["adapter_id"] for item in everything["items"] if item["similarity"] > threshold
    ]
    assert len(expected) == 3
    assert ids(answer) == expected
    assert all(item["similarity"] >= threshold for item in answer["items"])
    library.api.assert_recorded(answer, "similar", target_lora_id=query.id)
    # Nothing is that similar: an empty answer, not an error, and no hint (vectors exist).
    none = library.api.similar(query.id, min_score=1)
    assert none["items"] == [] and none["hint"] is None


@pytest.mark.parametrize("limit", [1, 3, 10, 100])
def test_limit_is_respected(library: Library, limit: int) -> None:
    query = library.rich("claymation")[0]
    answer = library.api.similar(query.id, limit=limit, same_base_model="false", min_score=-1)
    assert len(answer["items"]) == limit
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    library.api.assert_recorded(answer, "similar", target_lora_id=query.id)


# --- 3. by-trigger ----------------------------------------------------------------------------


@pytest.fixture
def trigger_api(api: RecApi) -> RecApi:
    api.add(
        make_adapter("Ink Wash Master", trained_words=["Ink Wash"], base_model="SDXL 1.0"),
        make_adapter("Watercolor Dream", trained_words=["watercolor"], base_model="SDXL 1.0"),
        make_adapter("British Watercolour", trained_words=["watercolour"], base_model="SD 1.5"),
        make_adapter(
            "Pixel Hero", trained_words=["pixel art"], activation_text="pixel art, 16-bit"
        ),
        make_adapter("Neon Nights", triggers=["neon city"], base_model="Flux.1 D"),
    )
    assert api.embed().computed == 5
    return api


def names(answer: dict[str, Any]) -> list[str]:
    return [item["name"] for item in answer["items"]]


EXACT = "trigger word 'ink wash'"


@pytest.mark.parametrize(
    ("q", "score", "reason"),
    [
        ("ink wash", 1.0, EXACT),  # the trigger as normalised
        ("Ink Wash", 1.0, EXACT),  # as the author wrote it
        ("Ink_Wash!", 1.0, EXACT),  # other punctuation and case
        ("  INK   wash  ", 1.0, EXACT),
        ("inkwash", 0.95, "trigger word spelled 'inkwash'"),  # the compact spelling
        ("InkWash", 0.95, "trigger word spelled 'InkWash'"),
    ],
)
def test_by_trigger_finds_exact_and_alias_spellings(
    trigger_api: RecApi, q: str, score: float, reason: str
) -> None:
    answer = trigger_api.by_trigger(q)
    assert names(answer) == ["Ink Wash Master"]
    first = answer["items"][0]
    assert first["similarity"] == first["score"] == score
    assert first["reasons"] == [reason]
    assert answer["hint"] is None
    trigger_api.assert_recorded(answer, "trigger", context_prompt=q)


def test_by_trigger_finds_a_near_spelling_and_ranks_exact_above_near(trigger_api: RecApi) -> None:
    typo = trigger_api.by_trigger("ink wasj")  # one letter off
    assert names(typo)[0] == "Ink Wash Master"
    near = typo["items"][0]
    assert 0.45 <= near["score"] < 0.95
    assert "trigger word 'ink wash' is close" in near["reasons"]

    exact = trigger_api.by_trigger("watercolor")
    assert names(exact) == ["Watercolor Dream", "British Watercolour"]
    first, second = exact["items"]
    assert first["score"] == 1.0
    assert 0.45 <= second["score"] < 0.95
    assert "trigger word 'watercolour' is close" in second["reasons"]

    both_near = trigger_api.by_trigger("watercolir")  # a substitution: near both
    assert names(both_near) == ["Watercolor Dream", "British Watercolour"]
    assert 0.45 <= both_near["items"][1]["score"] < both_near["items"][0]["score"] < 0.95

    one = trigger_api.by_trigger("watercolor", limit=1)
    assert names(one) == ["Watercolor Dream"]
    trigger_api.assert_recorded(one, "trigger", context_prompt="watercolor")


def test_by_trigger_reads_activation_text_and_plain_triggers(trigger_api: RecApi) -> None:
    assert names(trigger_api.by_trigger("16-bit"))[:1] == ["Pixel Hero"]
    assert names(trigger_api.by_trigger("Neon City"))[:1] == ["Neon Nights"]


@pytest.mark.parametrize("q", ["qzxv plorf", "zzzzzz", "42"])
def test_by_trigger_of_nonsense_is_empty(trigger_api: RecApi, q: str) -> None:
    answer = trigger_api.by_trigger(q)
    assert answer["items"] == []
    trigger_api.assert_recorded(answer, "trigger", context_prompt=q)


def test_a_trigger_typed_twice_counts_once_and_its_holder_is_ranked(trigger_api: RecApi) -> None:
    for prompt in ("a harbour, ink wash", "ink wash harbour, more ink wash, Ink-Wash"):
        answer = trigger_api.for_prompt(prompt, active_adapter_ids=[], limit=5)
        first = answer["items"][0]
        assert first["name"] == "Ink Wash Master", names(answer)
        assert first["score"] == pytest.approx(first["similarity"] + 0.25, abs=2e-4)
        said = "its trigger word 'ink wash' is in your prompt"
        assert first["reasons"].count(said) == 1, first["reasons"]
        # Only the holder gets the trigger reason; the others are there for their similarity.
        for item in answer["items"][1:]:
            assert item["score"] == pytest.approx(item["similarity"], abs=2e-4)
            assert not any("trigger word" in reason for reason in item["reasons"])


def test_by_trigger_on_the_family_library(library: Library) -> None:
    """Each canonical trigger some adapter carries (as normalised) finds all its holders."""
    checked = 0
    for family in FAMILIES:
        for trigger in family.triggers:
            word = normalize_trigger(trigger)
            holders = {
                entry.id
                for entry in library.entries
                if word in {normalize_trigger(t) for t in entry.triggers}
            }
            if not holders:
                continue
            answer = library.api.by_trigger(trigger, limit=30)
            # Exact matches are the 1.0s (the score adds ratings and favourites to that).
            exact = {item["adapter_id"] for item in answer["items"] if item["similarity"] == 1.0}
            assert exact == holders, trigger
            assert {library.family[adapter_id] for adapter_id in exact} == {family.key}
            checked += 1
    assert checked >= len(FAMILIES)


# --- 4. for-prompt ----------------------------------------------------------------------------


def test_a_trigger_word_in_the_prompt_brings_its_family_first(library: Library) -> None:
    shares = []
    for family in FAMILIES:
        trigger = family.triggers[0]
        prompt = f"a quiet scene at dawn, {trigger}, masterpiece"
        answer = library.api.for_prompt(prompt, active_adapter_ids=[], limit=5)
        first = answer["items"][0]
        assert library.family[first["adapter_id"]] == family.key, (trigger, names(answer))
        said = f"its trigger word {normalize_trigger(trigger)!r} is in your prompt"
        assert said in first["reasons"], first["reasons"]
        shares.append(library.share(ids(answer), family.key))
        library.api.assert_recorded(answer, "prompt", context_prompt=prompt, active_loras=None)
    assert min(shares) >= 0.6 and sum(shares) / len(shares) >= 0.9, shares


def test_a_prompt_without_triggers_still_finds_the_subject(library: Library) -> None:
    answer = library.api.for_prompt(
        "retro 16-bit game sprite with a limited palette", active_adapter_ids=[], limit=5
    )
    assert library.share(ids(answer), "pixel_art") >= 0.8, names(answer)


def test_active_adapters_are_left_out_and_pull_toward_their_family(library: Library) -> None:
    # A prompt about no family in particular: what the active adapters are decides more.
    prompt = "a portrait of a traveller on a road, high quality"
    alone, pulled = [], []
    for family in FAMILIES:
        active = [entry.id for entry in library.rich(family.key)[:3]]
        without = library.api.for_prompt(prompt, active_adapter_ids=[], limit=5)
        answer = library.api.for_prompt(prompt, active_adapter_ids=active, limit=5)
        assert not set(active) & set(ids(answer))
        alone.append(library.share(ids(without), family.key))
        pulled.append(library.share(ids(answer), family.key))
        assert any(" and to " in reason for item in answer["items"] for reason in item["reasons"])
        library.api.assert_recorded(answer, "prompt", context_prompt=prompt, active_loras=active)
    mean_alone, mean_pulled = sum(alone) / len(alone), sum(pulled) / len(pulled)
    print(f"family share of the top 5: {mean_alone:.2f} alone, {mean_pulled:.2f} with 3 active")
    assert mean_pulled >= mean_alone + 0.3, (alone, pulled)
    assert sum(p > a for a, p in zip(alone, pulled, strict=True)) >= 0.75 * len(FAMILIES)


def test_for_prompt_base_model_and_limit(library: Library) -> None:
    answer = library.api.for_prompt("neon city at night", active_adapter_ids=[], limit=7)
    assert len(answer["items"]) == 7
    only = library.api.for_prompt(
        "neon city at night", active_adapter_ids=[], limit=7, base_model="SD 1.5"
    )
    assert len(only["items"]) == 7
    assert {item["base_model"] for item in only["items"]} == {"SD 1.5"}
    library.api.assert_recorded(only, "prompt", context_prompt="neon city at night")


def test_the_catalog_active_adapters_are_the_default(small_library: Library) -> None:
    api = small_library.api
    active = [entry.id for entry in small_library.rich("knitted_sweater")[:2]]
    for ordinal, adapter_id in enumerate(active, start=1):
        api.patch_adapter(adapter_id, active=True, ordinal=ordinal)
    prompt = "a cozy cable knit sweater, knitted sweater"

    default = api.for_prompt(prompt, limit=10)
    assert not set(active) & set(ids(default))
    api.assert_recorded(default, "prompt", context_prompt=prompt, active_loras=active)
    explicit = api.for_prompt(prompt, active_adapter_ids=active, limit=10)
    assert ids(explicit) == ids(default)

    # An explicit empty list means no active adapters: the active ones may be suggested.
    none = api.for_prompt(prompt, active_adapter_ids=[], limit=10)
    assert set(active) <= set(ids(none))
    api.assert_recorded(none, "prompt", active_loras=None)


# --- 5. every ranking signal moves results ----------------------------------------------------


@dataclass
class Tie:
    """A query and two candidates the light embedder finds almost equally similar: their
    texts hold the same words (a tag, an author and a base model swapped between them)."""

    api: RecApi
    query: str
    a: str
    b: str
    unrelated: list[str]
    traits: dict[str, dict[str, str]]

    def ask(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.api.similar(self.query, limit=6, same_base_model="false")
        return answer


@pytest.fixture
def tie(api: RecApi) -> Tie:
    traits = {
        "a": {"tag": "koi", "author": "crane_painter", "base_model": "SDXL 1.0"},
        "b": {"tag": "crane", "author": "koi_painter", "base_model": "SD 1.5"},
    }
    query, a, b, *unrelated = api.add(
        make_adapter(
            "Ink Wash Landscape",
            tags=["ink wash", "landscape"],
            trained_words=["ink wash"],
            base_model="Pony",
            author_username="sumi_master",
            description="Ink wash painting of misty mountains.",
        ),
        make_adapter(
            "Ink Wash Study",
            version="a",
            tags=["ink wash", traits["a"]["tag"]],
            trained_words=["ink wash"],
            base_model=traits["a"]["base_model"],
            author_username=traits["a"]["author"],
            description="Ink wash painting, also tried on SD 1.5.",
        ),
        make_adapter(
            "Ink Wash Study",
            version="b",
            tags=["ink wash", traits["b"]["tag"]],
            trained_words=["ink wash"],
            base_model=traits["b"]["base_model"],
            author_username=traits["b"]["author"],
            description="Ink wash painting, also tried on SDXL 1.0.",
        ),
        make_adapter("Pixel Hero", tags=["pixel art", "sprite"], trained_words=["pixel art"]),
        make_adapter("Chrome Robot", tags=["robot", "metal"], trained_words=["chrome robot"]),
    )
    assert api.embed().computed == 5
    return Tie(api, query, a, b, unrelated, {a: traits["a"], b: traits["b"]})


# Each signal: apply it (tie, first, second, session id of the answer that showed them) and
# return {adapter id: (expected boost, the reason it gives)}.
Applied = dict[str, tuple[float, str]]


def _rating(tie: Tie, first: str, second: str, _session: str) -> Applied:
    tie.api.patch_adapter(second, rating=5)
    tie.api.patch_adapter(first, rating=1)
    step = ranking.RATING_STEP
    return {second: (2 * step, "you rated it 5/5"), first: (-2 * step, "you rated it 1/5")}


def _favourite(tie: Tie, first: str, second: str, _session: str) -> Applied:
    tie.api.patch_adapter(second, is_favorite=True)
    return {second: (ranking.FAVORITE, "one of your favourites")}


def _liked(kind: str, times: int = 1) -> Callable[[Tie, str, str, str], Applied]:
    def apply(tie: Tie, first: str, second: str, session: str) -> Applied:
        for _ in range(times):
            tie.api.feedback(session, second, kind)
        boost = ranking.LIKED * min(times, ranking.FEEDBACK_CAP)
        return {second: (boost, f"you liked it before ({times}x)")}

    return apply


def _disliked(kind: str) -> Callable[[Tie, str, str, str], Applied]:
    def apply(tie: Tie, first: str, second: str, session: str) -> Applied:
        tie.api.feedback(session, first, kind, reason="not my style")
        return {first: (-ranking.DISLIKED, "you turned it down before (1x)")}

    return apply


def _preference(kind: str, weight: float) -> Callable[[Tie, str, str, str], Applied]:
    def apply(tie: Tie, first: str, second: str, _session: str) -> Applied:
        # A positive weight lifts the second, a negative one sinks the first.
        target = second if weight > 0 else first
        value = tie.traits[target][kind]
        shown = tie.api.put_preferences([{"type": kind, "value": value, "weight": weight}])
        assert [(p["type"], p["value"], p["weight"]) for p in shown] == [
            (kind, value.lower(), weight)
        ]
        verb = "you prefer" if weight > 0 else "you avoid"
        return {target: (ranking.PREFERENCE * weight, f"{verb} {kind} {value.lower()!r}")}

    return apply


SIGNALS: dict[str, Callable[[Tie, str, str, str], Applied]] = {
    "rating-5-vs-1": _rating,
    "favourite": _favourite,
    "positive-feedback": _liked("positive"),
    "used-feedback": _liked("used"),
    "positive-feedback-capped": _liked("positive", times=5),
    "negative-feedback": _disliked("negative"),
    "dismissed-feedback": _disliked("dismissed"),
    "prefer-tag": _preference("tag", 1.0),
    "avoid-tag": _preference("tag", -1.0),
    "prefer-base-model": _preference("base_model", 1.0),
    "avoid-base-model": _preference("base_model", -1.0),
    "prefer-author": _preference("author", 1.0),
    "avoid-author": _preference("author", -1.0),
}


@pytest.mark.parametrize("signal", list(SIGNALS))
def test_each_ranking_signal_decides_between_near_ties(tie: Tie, signal: str) -> None:
    before = tie.ask()
    first, second = ids(before)[:2]
    assert {first, second} == {tie.a, tie.b}, before
    gap = item_of(before, first)["similarity"] - item_of(before, second)["similarity"]
    assert 0 <= gap < TIE_GAP, f"not a near tie: {gap}"
    for item in before["items"]:
        assert item["score"] == item["similarity"] and item["reasons"] == [
            "similar to Ink Wash Landscape"
        ]

    expected = SIGNALS[signal](tie, first, second, before["session_id"])

    after = tie.ask()
    assert ids(after)[:2] == [second, first]
    for adapter_id in (first, second):
        item = item_of(after, adapter_id)
        assert item["similarity"] == item_of(before, adapter_id)["similarity"]
        boost, reason = expected.get(adapter_id, (0.0, None))
        assert item["score"] == pytest.approx(item["similarity"] + boost, abs=2e-4)
        if reason is not None:
            assert reason in item["reasons"], item["reasons"]
    tie.api.assert_recorded(after, "similar", target_lora_id=tie.query)


def test_boosts_never_lift_an_unrelated_adapter_over_related_ones(tie: Tie) -> None:
    unrelated = tie.unrelated[0]
    tie.api.patch_adapter(unrelated, rating=5, is_favorite=True)
    session = tie.api.similar(tie.query, limit=10, same_base_model="false", min_score=-1)
    for _ in range(3):
        tie.api.feedback(session["session_id"], unrelated, "positive")
    tie.api.put_preferences([{"type": "tag", "value": "pixel art", "weight": 1}])
    answer = tie.api.similar(tie.query, limit=10, same_base_model="false", min_score=-1)
    order = ids(answer)
    assert order.index(unrelated) > max(order.index(tie.a), order.index(tie.b))
    assert len(item_of(answer, unrelated)["reasons"]) == 5  # similar to + four boosts


def test_feedback_is_recorded_against_its_session(tie: Tie) -> None:
    answer = tie.ask()
    tie.api.feedback(answer["session_id"], tie.a, "used", reason="in my last render")
    tie.api.feedback(answer["session_id"], tie.b, "dismissed")
    with tie.api.sessions() as session:
        row = session.get(RecommendationSession, answer["session_id"])
        assert row is not None
        assert row.user_feedback == {tie.a: "used", tie.b: "dismissed"}
        given = session.scalars(
            select(RecommendationFeedback).order_by(RecommendationFeedback.created_at)
        ).all()
        assert [
            (f.recommended_lora_id, f.feedback_type, f.implicit_signal, f.feedback_reason)
            for f in given
        ] == [(tie.a, "used", True, "in my last render"), (tie.b, "dismissed", True, None)]


def test_preferences_round_trip_and_replace(api: RecApi) -> None:
    assert api.call("GET", "/preferences", 200) == []
    wanted = [
        {"type": "tag", "value": "Ink", "weight": 1},
        {"type": "base_model", "value": "SD 1.5", "weight": -0.5},
        {"type": "author", "value": "sumi_master", "weight": 0.25},
        {"type": "tag", "value": "INK", "weight": 0.5},  # the same tag again: the last wins
    ]
    shown = api.put_preferences(wanted)
    assert [(p["type"], p["value"], p["weight"], p["learned_from"]) for p in shown] == [
        ("author", "sumi_master", 0.25, "explicit"),
        ("base_model", "sd 1.5", -0.5, "explicit"),
        ("tag", "ink", 0.5, "explicit"),
    ]
    assert api.call("GET", "/preferences", 200) == shown
    replaced = api.put_preferences([{"type": "tag", "value": "neon", "weight": -1}])
    assert [(p["type"], p["value"], p["weight"]) for p in replaced] == [("tag", "neon", -1.0)]
    assert api.put_preferences([]) == []


# --- 6. recompute after edits and after a model change ----------------------------------------


def test_an_edit_recomputes_only_that_adapter_and_similar_follows(small_library: Library) -> None:
    api, total = small_library.api, len(small_library.entries)
    assert api.embed() == EmbedCount(computed=0, unchanged=total)

    # A user field that is part of the text, through the catalog API.
    tagged = small_library.rich("low_poly")[0].id
    old = api.embedding(tagged)
    assert old is not None
    api.patch_adapter(tagged, user_tags=["faceted crystal"])
    assert api.embed() == EmbedCount(computed=1, unchanged=total - 1)
    new = api.embedding(tagged)
    assert new is not None and new.source_hash != old.source_hash
    assert new.semantic_embedding != old.semantic_embedding
    assert new.last_computed > old.last_computed

    # Metadata (not a user field, so straight to the row): a pixel-art adapter re-described
    # as an ink wash one.
    moved = small_library.rich("pixel_art")[0].id
    before = api.similar(moved, limit=5, same_base_model="false")
    assert small_library.share(ids(before), "ink_wash") == 0
    old_hash = api.embedding(moved).source_hash  # type: ignore[union-attr]
    api.update_adapter(
        moved,
        name="Sumi-e Ink Wash Study",
        description="Monochrome ink wash painting with sumi-e brushstrokes on rice paper.",
        tags=["ink", "sumi-e", "brush", "monochrome"],
        trained_words=["ink wash style"],
        triggers=["ink wash style"],
        activation_text=None,
        base_model="SDXL 1.0",
        sd_version="SDXL",
    )
    # Not recomputed yet: the stored vector (and so the answer) is the old one.
    assert ids(api.similar(moved, limit=5, same_base_model="false")) == ids(before)
    assert api.embed() == EmbedCount(computed=1, unchanged=total - 1)
    assert api.embedding(moved).source_hash != old_hash  # type: ignore[union-attr]

    after = api.similar(moved, limit=5)
    assert small_library.share(ids(after), "ink_wash") >= 0.8, names(after)
    assert {item["base_model"] for item in after["items"]} == {"SDXL 1.0"}
    assert moved in ids(api.by_trigger("ink wash style", limit=20))
    api.assert_recorded(after, "similar", target_lora_id=moved)


def test_vectors_of_another_model_are_counted_then_recomputed(small_library: Library) -> None:
    api, total = small_library.api, len(small_library.entries)
    assert api.stats()["other_model"] == 0
    stale = [entry.id for entry in small_library.entries[:5]]
    with api.engine.begin() as connection:
        connection.execute(
            update(LoraEmbedding)
            .where(LoraEmbedding.adapter_id.in_(stale))
            .values(embedding_model="old-model/64")
        )
    stats = api.stats()
    assert (stats["adapters"], stats["embedded"], stats["other_model"]) == (total, total - 5, 5)
    assert stats["coverage"] == round((total - 5) / total, 4)
    assert stats["index_size"] == total - 5
    assert (stats["model"], stats["dim"], stats["embedder"]) == (LIGHT.name, LIGHT.dim, "light")
    # The old model's vectors are never compared with the current one's.
    orphan = api.similar(stale[0])
    assert orphan["items"] == [] and stale[0] in orphan["hint"]
    everyone = api.similar(small_library.entries[10].id, limit=100, same_base_model="false")
    assert not set(stale) & set(ids(everyone))

    assert api.embed() == EmbedCount(computed=5, unchanged=total - 5)
    stats = api.stats()
    assert (stats["embedded"], stats["other_model"], stats["coverage"]) == (total, 0, 1.0)
    assert stats["index_size"] == total
    assert api.similar(stale[0])["items"]

    assert api.embed(force=True) == EmbedCount(computed=total, unchanged=0)
    assert api.embed(only=stale[:2], force=True) == EmbedCount(computed=2, unchanged=0)
    assert api.embed(only=stale[:2]) == EmbedCount(computed=0, unchanged=2)


def test_a_deleted_adapter_leaves_the_index(small_library: Library) -> None:
    api = small_library.api
    query = small_library.rich("vaporwave")[0].id
    before = ids(api.similar(query, limit=5))
    gone = before[0]
    response = api.client.delete(f"/v1/adapters/{gone}")
    assert response.status_code == 204, response.text
    assert api.embedding(gone) is None
    after = api.similar(query, limit=5)
    assert gone not in ids(after)
    assert ids(after)[:4] == before[1:]
    assert api.stats()["index_size"] == len(small_library.entries) - 1
    api.similar(gone, expect=404)


# --- 7. the worker path -----------------------------------------------------------------------


def wait_for_run(api: RecApi, run_id: str, worker: WorkerProcess) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = api.run(run_id)
        return run if run["status"] in ("succeeded", "failed") else None

    return wait_until(
        finished, RUN_TIMEOUT, lambda: f"run: {api.run(run_id)}\n{worker.output()}", 0.1
    )


@pytest.mark.parametrize("queue", ["sqlite-queue", "redis"])
def test_a_worker_carries_out_a_recompute(
    queue: str,
    migrated_sqlite_url: str,
    tmp_path: Path,
    cli_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    redis_url = request.getfixturevalue("redis_url") if queue == "redis" else None
    queue_path = None if redis_url else tmp_path / "queue.db"
    with open_api(migrated_sqlite_url, tmp_path, redis_url=redis_url, queue_path=queue_path) as api:
        entries = insert_library(api.engine, per_family=2, seed=5)
        total = len(entries)
        assert api.stats()["coverage"] == 0.0

        queued = api.recompute()
        assert queued["status"] == "pending"
        assert (queued["total"], queued["done"], queued["error"]) == (None, 0, None)
        assert (queued["adapter_ids"], queued["force"], queued["model"]) == (
            None,
            False,
            LIGHT.name,
        )
        assert api.run(queued["id"])["status"] == "pending"  # no worker yet: it waits

        env = worker_env(
            cli_env,
            DATABASE_URL=migrated_sqlite_url,
            REDIS_URL=redis_url,
            QUEUE_PATH=queue_path,
            LOG_LEVEL="INFO",
            WORKER_SHUTDOWN_TIMEOUT=5,
        )
        with running_worker(env, workers=1, label=queue) as worker:
            run = wait_for_run(api, queued["id"], worker)
            assert run["status"] == "succeeded", f"{run}\n{worker.output()}"
            assert (run["total"], run["done"], run["error"]) == (total, total, None)
            assert run["started_at"] is not None and run["finished_at"] is not None
            created, started, finished = (
                datetime.fromisoformat(run[key])
                for key in ("created_at", "started_at", "finished_at")
            )
            assert created <= started <= finished
            stats = api.stats()
            assert (stats["coverage"], stats["embedded"], stats["index_size"]) == (
                1.0,
                total,
                total,
            )
            assert check_stored_vectors(api) == total

            # A forced recompute of one adapter: only that one is counted and rewritten.
            chosen = entries[0].id
            stamp = api.embedding(chosen).last_computed  # type: ignore[union-attr]
            again = api.recompute(adapter_ids=[chosen], force=True)
            assert (again["adapter_ids"], again["force"]) == ([chosen], True)
            run = wait_for_run(api, again["id"], worker)
            assert (run["status"], run["total"], run["done"]) == ("succeeded", 1, 1)
            assert api.embedding(chosen).last_computed > stamp  # type: ignore[union-attr]
        assert api.similar(chosen)["items"]


def test_a_starting_worker_queues_embeddings_that_are_missing_or_of_another_model(
    migrated_sqlite_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    queue_path = tmp_path / "queue.db"
    with open_api(migrated_sqlite_url, tmp_path, queue_path=queue_path) as api:
        entries = insert_library(api.engine, per_family=1, seed=9)
        # One adapter carries a vector of another model (RECOMMENDATION_EMBEDDER changed).
        assert api.embed(only=[entries[0].id]).computed == 1
        with api.engine.begin() as connection:
            connection.execute(update(LoraEmbedding).values(embedding_model="some-older-model/128"))
        before = api.stats()
        assert (before["embedded"], before["other_model"]) == (0, 1)

        with running_worker(
            queue_env(cli_env, migrated_sqlite_url, queue_path), workers=1
        ) as worker:
            line = worker.wait_for_line("lack current embeddings; run ", RUN_TIMEOUT)
            run_id = line.rsplit("run ", 1)[1].split()[0]
            run = wait_for_run(api, run_id, worker)
            assert run["status"] == "succeeded", run
        after = api.stats()
        assert (after["embedded"], after["other_model"], after["coverage"]) == (
            len(entries),
            0,
            1.0,
        )

        # Everything current: the next worker start queues nothing.
        with running_worker(
            queue_env(cli_env, migrated_sqlite_url, queue_path), workers=1
        ) as worker:
            worker.wait_for_line("thread(s) as ", RUN_TIMEOUT)
            assert not worker.saw("lack current embeddings")


def test_a_recompute_the_queue_cannot_take_is_marked_failed(
    migrated_sqlite_url: str, tmp_path: Path
) -> None:
    # Nothing listens on port 9 (discard): the queue is unreachable.
    with open_api(migrated_sqlite_url, tmp_path, redis_url="redis://127.0.0.1:9/0") as api:
        run = api.recompute()
        assert run["status"] == "failed"
        assert "queue unreachable" in run["error"]
        assert api.run(run["id"]) == run


def queue_env(cli_env: dict[str, str], url: str, queue_path: Path) -> dict[str, str]:
    return worker_env(
        cli_env,
        DATABASE_URL=url,
        QUEUE_PATH=queue_path,
        LOG_LEVEL="INFO",
        WORKER_SHUTDOWN_TIMEOUT=5,
    )


def test_an_import_queues_an_embedding_run_that_a_worker_completes(
    migrated_sqlite_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """What `lora-manager import` and POST /v1/imports both do after an import that changed
    the catalog (cli.py, ingest/runs.py): `refresh_after_import`, called in-process here; the
    CLI path is the next test."""
    root = tmp_path / "loras"
    models = build_bulk_library(root, 6)
    queue_path = tmp_path / "queue.db"
    with open_api(migrated_sqlite_url, tmp_path, queue_path=queue_path) as api:
        summary = Importer(api.settings, api.sessions, echo=lambda _: None).run([root])
        assert (summary.new, summary.changed_catalog) == (len(models), True)
        run_id = refresh_after_import(api.sessions, api.settings)
        assert run_id is not None
        queued = api.run(run_id)
        assert (queued["status"], queued["model"], queued["adapter_ids"]) == (
            "pending",
            LIGHT.name,
            None,
        )
        assert api.by_trigger("ink style")["hint"] is not None  # nothing embedded yet

        env = queue_env(cli_env, migrated_sqlite_url, queue_path)
        with running_worker(env, workers=1, label="after-import") as worker:
            run = wait_for_run(api, run_id, worker)
        assert run["status"] == "succeeded", run
        assert (run["total"], run["done"]) == (len(models), len(models))
        assert api.stats()["coverage"] == 1.0
        found = api.by_trigger("ink style")
        assert found["items"] and found["items"][0]["similarity"] == 1.0

        # Importing the unchanged library again changes nothing, so no run is queued.
        again = Importer(api.settings, api.sessions, echo=lambda _: None).run([root])
        assert (again.unchanged, again.changed_catalog) == (len(models), False)


def test_a_cli_import_queues_an_embedding_run_that_a_worker_completes(
    migrated_sqlite_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    root = tmp_path / "loras"
    models = build_bulk_library(root, 6)
    queue_path = tmp_path / "queue.db"
    env = {**queue_env(cli_env, migrated_sqlite_url, queue_path), "LORA_ROOTS": str(root)}

    def run_import() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["lora-manager", "import", str(root)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    imported = run_import()
    match = re.search(r"embeddings: run (\S+) queued", imported.stderr)
    assert match, imported.stderr
    run_id = match.group(1)

    with open_api(migrated_sqlite_url, tmp_path, queue_path=queue_path) as api:
        assert api.stats()["adapters"] == len(models)
        assert api.run(run_id)["status"] == "pending"
        with running_worker(env, workers=1, label="after-cli-import") as worker:
            run = wait_for_run(api, run_id, worker)
        assert run["status"] == "succeeded", run
        assert (run["total"], run["done"]) == (len(models), len(models))
        assert api.stats()["coverage"] == 1.0

        # Nothing changed on disk: no new run.
        runs = api.count(EmbeddingRun)
        again = run_import()
        assert "embeddings: run" not in again.stderr
        assert api.count(EmbeddingRun) == runs


# --- 8. nothing to search yet -----------------------------------------------------------------


def test_without_embeddings_every_question_answers_empty_with_a_hint(api: RecApi) -> None:
    stats = api.stats()
    assert (stats["adapters"], stats["embedded"], stats["coverage"]) == (0, 0, 0.0)
    assert stats["index_size"] == 0
    for answer in (
        api.for_prompt("a cat", active_adapter_ids=[]),
        api.for_prompt("a cat"),
        api.by_trigger("ink wash"),
    ):
        assert answer["items"] == []
        assert "recompute" in answer["hint"]

    [first, second] = api.add(
        make_adapter("Ink Wash Master", trained_words=["ink wash"]),
        make_adapter("Pixel Hero", trained_words=["pixel art"]),
    )
    stats = api.stats()
    assert (stats["adapters"], stats["embedded"], stats["coverage"]) == (2, 0, 0.0)
    similar = api.similar(first)
    assert similar["items"] == [] and "no embeddings yet" in similar["hint"]
    api.assert_recorded(similar, "similar", target_lora_id=first)
    prompt = api.for_prompt("ink wash", active_adapter_ids=[first])
    assert prompt["items"] == [] and "no embeddings yet" in prompt["hint"]
    api.assert_recorded(prompt, "prompt", context_prompt="ink wash")
    trigger = api.by_trigger("ink wash")
    assert trigger["items"] == [] and "no embeddings yet" in trigger["hint"]
    api.assert_recorded(trigger, "trigger", context_prompt="ink wash")

    # One adapter embedded: the other one's hint says how to embed it.
    assert api.embed(only=[first]) == EmbedCount(computed=1, unchanged=0)
    assert api.stats()["coverage"] == 0.5
    missing = api.similar(second)
    assert missing["items"] == [] and second in missing["hint"]
    assert api.similar(first)["hint"] is None


# --- 9. validation and authentication ---------------------------------------------------------


def test_feedback_refusals(tie: Tie) -> None:
    answer = tie.ask()
    session = answer["session_id"]
    assert "no-such-session" in str(tie.api.feedback("no-such-session", tie.a, "positive", 404))
    # Adapters that were not suggested in that session (the query itself, an unknown id).
    tie.api.feedback(session, tie.query, "positive", 422)
    tie.api.feedback(session, "no-such-adapter", "positive", 422)
    tie.api.feedback(session, tie.a, "loved", 422)
    tie.api.feedback(session, tie.a, "positive", 422, reason="x" * 1001)
    tie.api.feedback(session, tie.a, "positive", 422, extra_field=1)
    assert tie.api.count(RecommendationFeedback) == 0


@pytest.mark.parametrize(
    "preference",
    [
        {"type": "tag", "value": "ink", "weight": 1.5},
        {"type": "tag", "value": "ink", "weight": -1.01},
        {"type": "colour", "value": "red", "weight": 1},
        {"type": "tag", "value": "", "weight": 1},
    ],
    ids=["weight-above-1", "weight-below-minus-1", "unknown-type", "empty-value"],
)
def test_preferences_out_of_range_are_refused(api: RecApi, preference: dict[str, Any]) -> None:
    api.put_preferences([{"type": "tag", "value": "kept", "weight": 1}])
    api.put_preferences([preference], expect=422)
    assert [p["value"] for p in api.call("GET", "/preferences", 200)] == ["kept"]


def test_request_refusals(tie: Tie) -> None:
    api = tie.api
    runs = api.count(EmbeddingRun)
    detail = api.recompute(422, adapter_ids=[tie.a, "no-such-adapter"])
    assert "no-such-adapter" in str(detail)
    assert api.count(EmbeddingRun) == runs
    api.recompute(422, force="sometimes")
    api.similar("no-such-adapter", expect=404)
    api.call("GET", "/embeddings/runs/no-such-run", 404)
    for q in ("!!!", "_-_", "  "):
        assert "letters or digits" in str(api.by_trigger(q, expect=422))
    api.by_trigger("", expect=422)
    api.similar(tie.query, expect=422, limit=0)
    api.similar(tie.query, expect=422, limit=101)
    api.similar(tie.query, expect=422, min_score=2)
    api.for_prompt("", expect=422)
    detail = api.for_prompt("ink", expect=422, active_adapter_ids=[tie.a, "ghost"])
    assert "ghost" in str(detail)
    api.for_prompt("ink", expect=422, limit=0)


def test_every_route_needs_the_api_key(migrated_sqlite_url: str, tmp_path: Path) -> None:
    with open_api(migrated_sqlite_url, tmp_path, api_key=API_KEY) as api:
        [adapter_id] = api.add(make_adapter("Ink Wash Master", trained_words=["ink wash"]))
        paths = api.client.get("/openapi.json", headers={"X-API-Key": API_KEY}).json()["paths"]
        routes = sorted(
            (method.upper(), path)
            for path, operations in paths.items()
            if path.startswith(PREFIX)
            for method in operations
        )
        assert [f"{m} {p.removeprefix(PREFIX)}" for m, p in routes] == [
            "GET /by-trigger",
            "GET /embeddings/runs/{run_id}",
            "GET /preferences",
            "GET /similar/{adapter_id}",
            "GET /stats",
            "POST /embeddings/recompute",
            "POST /feedback",
            "POST /for-prompt",
            "PUT /preferences",
        ]
        bodies = {
            "/embeddings/recompute": {},
            "/feedback": {"session_id": "s", "adapter_id": adapter_id, "feedback": "positive"},
            "/for-prompt": {"prompt": "ink wash"},
            "/preferences": {"preferences": []},
        }
        for method, path in routes:
            url = path.replace("{adapter_id}", adapter_id).replace("{run_id}", "r")
            short = path.removeprefix(PREFIX)
            kwargs: dict[str, Any] = {"params": {"q": "ink"}} if short == "/by-trigger" else {}
            if method in ("POST", "PUT"):
                kwargs["json"] = bodies[short]
            for headers in ({}, {"X-API-Key": "wrong"}):
                response = api.client.request(method, url, headers=headers, **kwargs)
                assert response.status_code == 401, (method, path, headers, response.text)
        assert api.count(RecommendationSession) == 0
        assert api.count(EmbeddingRun) == 0
        api.client.headers["X-API-Key"] = API_KEY
        assert api.stats()["adapters"] == 1
        assert api.by_trigger("ink wash")["hint"] is not None


# --- 10. stored vectors -----------------------------------------------------------------------


def test_stored_vectors_are_raw_float32_never_pickles(library: Library) -> None:
    assert check_stored_vectors(library.api) == len(library.entries)
    with library.api.engine.connect() as connection:
        kinds = connection.exec_driver_sql(
            "SELECT DISTINCT typeof(semantic_embedding) FROM loraembedding"
        ).all()
    assert kinds == [("blob",)]
    stats = library.api.stats()
    assert (stats["coverage"], stats["other_model"]) == (1.0, 0)


# --- bugs found -------------------------------------------------------------------------------


def test_the_recommendations_service_imports_on_its_own() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import lora_manager.recommendations.service"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_for_prompt_reports_the_cosine_as_similarity_and_the_trigger_bonus_in_score(
    api: RecApi,
) -> None:
    [adapter_id] = api.add(
        make_adapter("Ink Wash Master", trained_words=["ink wash"], base_model="SDXL 1.0")
    )
    assert api.embed().computed == 1
    with api.sessions() as session:
        adapter = session.get(Adapter, adapter_id)
        assert adapter is not None
        prompt = adapter_text(adapter)
    vectors = LIGHT.encode([prompt, "ink wash"])
    stored = api.embedding(adapter_id)
    assert stored is not None
    mine = np.frombuffer(bytes(stored.semantic_embedding), dtype="<f4")
    for text, vector in zip([prompt, "ink wash"], vectors, strict=True):
        item = api.for_prompt(text, active_adapter_ids=[])["items"][0]
        assert "its trigger word 'ink wash' is in your prompt" in item["reasons"]
        assert item["similarity"] == pytest.approx(float(vector @ mine), abs=1e-3)
        assert item["similarity"] <= 1.0
        assert item["score"] > item["similarity"]  # the trigger bonus is a boost


def test_a_spaced_query_for_a_compact_trigger_ranks_below_exact_matches(
    trigger_api: RecApi,
) -> None:
    trigger_api.add(make_adapter("Inkwash Lite", trained_words=["inkwash"]))
    assert trigger_api.embed().computed == 1
    answer = trigger_api.by_trigger("ink wash")
    compact = next(item for item in answer["items"] if item["name"] == "Inkwash Lite")
    assert compact["score"] < 1.0
    assert names(answer)[0] == "Ink Wash Master"
