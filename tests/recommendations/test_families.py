"""The family-labelled LoRA library generator (tests/support/families.py): what it builds,
that it is deterministic, that it loads into migrated SQLite and PostgreSQL databases, and
that precision_at_k measures what it says."""

from __future__ import annotations

import math
import random
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from lora_manager.catalog.repository import AdapterFilters, build_search_text, count_adapters
from lora_manager.core.config import load_settings
from lora_manager.core.db import make_engine
from lora_manager.core.migrations import MigrationRunner
from lora_manager.core.models import Adapter
from tests.support.families import (
    _ID_NAMESPACE,
    BASE_MODELS,
    CLOSE_PAIRS,
    FAMILIES,
    FAMILY_BY_KEY,
    GENERIC_WORDS,
    KINDS,
    Family,
    LibraryEntry,
    adapter_id,
    build_rows,
    insert_library,
    precision_at_k,
    tag_rows,
)

WORD = re.compile(r"[^\W_]+")  # how the catalog's search splits words
NOT_NULL = sorted(c.name for c in Adapter.__table__.columns if not c.nullable)


@pytest.fixture(scope="module")
def library() -> list[tuple[dict[str, Any], LibraryEntry]]:
    return build_rows(100)


# --- the families --------------------------------------------------------------------------


def test_families_cover_every_kind_and_base_model() -> None:
    assert len(FAMILIES) >= 24
    assert len(FAMILY_BY_KEY) == len(FAMILIES)  # keys are unique
    assert {f.kind for f in FAMILIES} == set(KINDS)
    assert {f.base_model for f in FAMILIES} == set(BASE_MODELS)
    for family in FAMILIES:
        assert len(family.words) >= 8, family.key
        assert len(set(family.words)) == len(family.words), family.key
        assert family.triggers and family.name_stems(), family.key
    by_base = Counter(f.base_model for f in FAMILIES)
    assert min(by_base.values()) >= 6, by_base  # base model alone can't pick the family


def test_close_families_share_words_and_names() -> None:
    ink, water = FAMILY_BY_KEY["ink_wash"], FAMILY_BY_KEY["watercolor"]
    assert {"painting", "brush", "brushstrokes", "paper"} <= set(ink.words) & set(water.words)
    for a, b in CLOSE_PAIRS:
        one, two = FAMILY_BY_KEY[a], FAMILY_BY_KEY[b]
        shared = (set(one.words) & set(two.words)) - set(GENERIC_WORDS)
        assert len(shared) >= 2, (a, b, shared)
        stem_words = [{w.lower() for s in f.name_stems() for w in s.split()} for f in (one, two)]
        assert stem_words[0] & stem_words[1], (a, b)
    assert {"Brush Painting", "Traditional Painting"} <= set(ink.names) & set(water.names)
    # Generic words are in many families' vocabulary, not one.
    generic = Counter(w for f in FAMILIES for w in f.words if w in GENERIC_WORDS)
    assert generic["style"] >= 5
    assert sum(1 for count in generic.values() if count >= 2) >= 5, generic


# --- build_rows ----------------------------------------------------------------------------


def test_build_rows_is_deterministic() -> None:
    first, again = build_rows(6, seed=7), build_rows(6, seed=7)
    assert first == again
    assert build_rows(6) == first  # the default seed is 7
    other = build_rows(6, seed=8)
    assert len(other) == len(first)
    assert not {r["id"] for r, _ in first} & {r["id"] for r, _ in other}
    pairs = zip(first, other, strict=True)
    changed = sum(a["description"] != b["description"] for (a, _), (b, _) in pairs)
    assert changed > 0.8 * len(first)


def test_every_family_per_family_times_with_its_base_model() -> None:
    rows = build_rows(30, seed=3)
    assert Counter(entry.family for _, entry in rows) == {f.key: 30 for f in FAMILIES}
    per_family: dict[str, int] = defaultdict(int)
    for row, entry in rows:
        family = FAMILY_BY_KEY[entry.family]
        n = per_family[family.key]
        per_family[family.key] += 1
        assert row["base_model"] == entry.base_model == family.base_model
        assert row["id"] == entry.id == str(uuid.uuid5(_ID_NAMESPACE, f"3/{family.key}/{n}"))
        assert entry.name == row["name"] and entry.triggers == (row["triggers"] or [])
        assert re.fullmatch(rf"/loras/{family.key}/[a-z0-9-]+-{n}\.safetensors", row["file_path"])
    assert len({r["id"] for r, _ in rows}) == len(rows)
    assert len({r["real_path"] for r, _ in rows}) == len(rows)
    pairs = [(r["name"], r["version"]) for r, _ in rows if r["version"] is not None]
    assert len(set(pairs)) == len(pairs)  # ux_adapter_name_version


def test_adapter_id_is_uuid5() -> None:
    for seed, family, n in ((7, "ink_wash", 0), (8, "x", 123), (0, "", 99999)):
        assert adapter_id(seed, family, n) == str(uuid.uuid5(_ID_NAMESPACE, f"{seed}/{family}/{n}"))


def test_rows_set_every_not_null_column(
    library: list[tuple[dict[str, Any], LibraryEntry]],
) -> None:
    """Only adapter columns, every NOT NULL one set (no server default relied on). A column
    added to the model later is required here only if it is NOT NULL."""
    columns = set(Adapter.__table__.columns.keys())
    for row, _ in library:
        assert set(row) <= columns
        assert all(row.get(name) is not None for name in NOT_NULL), row["id"]
        assert row["visibility"] == "Public" and row["ingest_status"] == "ok"
        assert isinstance(row["nsfw_level"], int) and isinstance(row["weight"], float)
    for row, _ in library[::97]:
        # The stored search text is what the catalog computes for a real Adapter.
        assert row["search_text"] == build_search_text(Adapter(**row))


def _plain(description: str) -> str:
    return re.sub(r"<[^>]+>", " ", description).replace("&amp;", "&")


def test_text_is_varied_like_a_real_library(
    library: list[tuple[dict[str, Any], LibraryEntry]],
) -> None:
    rows = [row for row, _ in library]
    sparse = [r for r in rows if r["version"] is None]
    assert 0.03 < len(sparse) / len(rows) < 0.07
    for r in sparse:
        empty = ("description", "tags", "trained_words", "triggers", "author_username")
        assert all(r[k] is None for k in (*empty, "activation_text", "stats")), r["name"]
    full = [(r, e) for r, e in library if r["version"] is not None]

    descriptions = [r["description"] for r, _ in full if r["description"]]
    html = [d for d in descriptions if "<p>" in d]
    assert 0.1 < len(html) / len(descriptions) < 0.4
    assert any("<b>" in d for d in descriptions) and any("<li>" in d for d in descriptions)
    about_family = 0
    for row, entry in full:
        if not row["description"]:
            continue
        plain = _plain(row["description"])
        sentences = [s for s in re.split(r"(?<=[.!])\s+", plain.strip()) if s.strip()]
        assert 1 <= len(sentences) <= 3, row["description"]
        words = FAMILY_BY_KEY[entry.family].words
        about_family += any(w in plain.lower() for w in words) or row["name"] in plain
    assert about_family / len(descriptions) > 0.97

    assert all(2 <= len(r["tags"]) <= 6 for r, _ in full if r["tags"] is not None)
    assert 0.2 < sum(r["activation_text"] is not None for r, _ in full) / len(full) < 0.5
    assert len({r["author_username"] for r in rows} - {None}) >= 100
    names = defaultdict(set)
    for row, entry in library:
        names[entry.family].add(row["name"])
    assert min(len(v) for v in names.values()) >= 8


def _canonical(word: str) -> str:
    return re.sub(r"[\s_-]+", "", word.lower())


def test_triggers_have_spelling_variants_and_a_few_typos(
    library: list[tuple[dict[str, Any], LibraryEntry]],
) -> None:
    written = [(w, e.family) for r, e in library for w in r["trained_words"] or []]
    variants: Counter[str] = Counter()
    for w, family in written:
        for t in FAMILY_BY_KEY[family].triggers:
            parts = t.split()
            if len(parts) > 1:
                variants["underscores"] += w == "_".join(parts)
                variants["hyphens"] += w == "-".join(parts)
                variants["camel case"] += w == "".join(p[:1].upper() + p[1:] for p in parts)
            variants["as is"] += w == t
            variants["title case"] += w == t.title() != t
            variants["upper case"] += w == t.upper()
    assert all(variants[k] >= 10 for k in variants), variants
    assert len(variants) == 6
    typos = [
        w
        for w, family in written
        if _canonical(w) not in {_canonical(t) for t in FAMILY_BY_KEY[family].triggers}
    ]
    assert 0.01 < len(typos) / len(written) < 0.1, typos[:10]


# --- insert_library ------------------------------------------------------------------------


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    settings = load_settings(database_url=db_url)
    MigrationRunner(settings, echo=lambda _: None).upgrade("head")
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def test_insert_library_loads_a_migrated_database(engine: Engine) -> None:
    per_family = 12
    rows = [row for row, _ in build_rows(per_family, seed=11)]
    entries = insert_library(engine, per_family, seed=11)
    assert [e.id for e in entries] == [r["id"] for r in rows]
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM adapter")) == len(FAMILIES) * per_family
        ids = set(conn.scalars(text("SELECT id FROM adapter")))
        assert ids == {e.id for e in entries}
        not_null = [c["name"] for c in inspect(conn).get_columns("adapter") if not c["nullable"]]
        assert set(not_null) == set(NOT_NULL)
        for name in not_null:
            assert conn.scalar(text(f"SELECT count(*) FROM adapter WHERE {name} IS NULL")) == 0
        # A missing JSON value is SQL NULL, as the importer leaves it, not JSON 'null'.
        no_tags = sum(r["tags"] is None for r in rows)
        assert no_tags > 0
        assert conn.scalar(text("SELECT count(*) FROM adapter WHERE tags IS NULL")) == no_tags
        tags = sum(len(tag_rows(r)) for r in rows)
        assert conn.scalar(text("SELECT count(*) FROM adaptertag")) == tags
        if engine.dialect.name == "sqlite":
            assert conn.scalar(text("SELECT count(*) FROM adapter_fts")) == len(rows)
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -2000  # put back
        base_models: dict[str, int] = dict(
            conn.execute(text("SELECT base_model, count(*) FROM adapter GROUP BY base_model")).all()
        )
    assert base_models == Counter(f.base_model for f in FAMILIES for _ in range(per_family))

    with Session(engine) as session:
        for row in rows[::41]:
            stored = session.get(Adapter, row["id"])
            assert stored is not None
            for key in ("name", "version", "tags", "triggers", "created_at", "description"):
                assert getattr(stored, key) == row[key], key
        # The catalog's word-prefix search is in step with the rows (FTS5 / tsvector).
        for word in ("watercolor", "sumi", "kaelith"):
            expected = sum(
                any(w.startswith(word) for w in WORD.findall(r["search_text"])) for r in rows
            )
            assert expected > 0
            assert count_adapters(session, AdapterFilters(q=word)) == expected, word


# --- precision_at_k ------------------------------------------------------------------------


def _entries(**families: int) -> list[LibraryEntry]:
    return [
        LibraryEntry(f"{key}{i}", key, "SDXL 1.0", f"{key} {i}", [])
        for key, count in families.items()
        for i in range(1, count + 1)
    ]


def test_precision_at_k_on_hand_made_results() -> None:
    entries = _entries(a=6, b=6)
    perfect = {"a1": ["a2", "a3", "a4", "a5", "a6"]}
    mixed = {"b1": ["b2", "a1", "b3", "a2", "a3"]}
    assert precision_at_k(perfect, entries) == 1.0
    assert precision_at_k(mixed, entries) == pytest.approx(0.4)
    assert precision_at_k(perfect | mixed, entries) == pytest.approx(0.7)
    assert precision_at_k({"a1": ["b1", "b2", "b3", "b4", "b5"]}, entries) == 0.0
    assert precision_at_k(mixed, entries, k=1) == 1.0
    assert precision_at_k(mixed, entries, k=3) == pytest.approx(2 / 3)
    # Beyond k is ignored; short lists and unknown ids are misses.
    assert precision_at_k({"a1": ["a2", "a3", "a4", "a5", "a6", "b1"]}, entries) == 1.0
    assert precision_at_k({"a1": ["a2"]}, entries) == pytest.approx(0.2)
    assert precision_at_k({"a1": []}, entries) == 0.0
    assert precision_at_k({"a1": ["a2", "zz", "a3"]}, entries, k=3) == pytest.approx(2 / 3)
    for bad in ({}, {"nope": ["a1"]}):
        with pytest.raises(ValueError):
            precision_at_k(bad, entries)
    with pytest.raises(ValueError):
        precision_at_k(perfect, entries, k=0)


def _tfidf_neighbours(rows: list[dict[str, Any]], ids: list[str], k: int) -> dict[str, list[str]]:
    """A plain bag-of-words recommender: the k nearest by TF-IDF cosine over search_text."""
    docs = [Counter(WORD.findall(r["search_text"])) for r in rows]
    df = Counter(word for doc in docs for word in doc)
    postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
    vectors = []
    for i, doc in enumerate(docs):
        vec = {w: c * math.log(len(docs) / df[w]) for w, c in doc.items()}
        norm = math.sqrt(sum(x * x for x in vec.values())) or 1.0
        vectors.append({w: x / norm for w, x in vec.items()})
        for w, x in vectors[-1].items():
            postings[w].append((i, x))
    out = {}
    for i, vec in enumerate(vectors):
        scores: dict[int, float] = defaultdict(float)
        for w, x in vec.items():
            for j, y in postings[w]:
                scores[j] += x * y
        scores.pop(i, None)
        best = sorted(scores, key=lambda j: (-scores[j], ids[j]))[:k]
        out[ids[i]] = [ids[j] for j in best]
    return out


def test_precision_is_not_trivial() -> None:
    """A bag-of-words recommender does well but not perfectly; the close pairs draw far
    more of its mistakes than chance would, and the base model alone is no shortcut."""
    built = build_rows(20)
    rows = [r for r, _ in built]
    entries = [e for _, e in built]
    ids = [e.id for e in entries]
    family = {e.id: e.family for e in entries}
    results = _tfidf_neighbours(rows, ids, 5)
    tfidf = precision_at_k(results, entries)
    assert 0.85 < tfidf < 1.0, tfidf

    close = {frozenset(pair) for pair in CLOSE_PAIRS}
    confused = Counter(
        frozenset((family[q], family[r]))
        for q, found in results.items()
        for r in found
        if family[r] != family[q]
    )
    by_chance = len(close) / math.comb(len(FAMILIES), 2)  # about 1 %
    share = sum(n for pair, n in confused.items() if pair in close) / confused.total()
    assert share > 5 * by_chance, confused.most_common(5)
    ink_or_water = {q: found for q, found in results.items() if family[q] in CLOSE_PAIRS[0]}
    assert precision_at_k(ink_or_water, entries) < tfidf

    # Five random adapters on the same base model: one family in seven to ten.
    rng = random.Random(0)
    same_base = {
        e.id: rng.sample([o.id for o in entries if o.base_model == e.base_model and o is not e], 5)
        for e in entries
    }
    assert precision_at_k(same_base, entries) < 0.25


def test_custom_families() -> None:
    mine = (
        Family("aa", "style", "SD 1.5", tuple(f"word{i}" for i in range(8)), ("aa style",)),
        Family("bb", "pose", "Pony", tuple(f"pose{i}" for i in range(8)), ("bb pose",)),
    )
    rows = build_rows(5, seed=1, families=mine)
    assert Counter(e.family for _, e in rows) == {"aa": 5, "bb": 5}
    assert {r["base_model"] for r, e in rows if e.family == "bb"} == {"Pony"}
    assert build_rows(0) == []
