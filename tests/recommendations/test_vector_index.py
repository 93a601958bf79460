"""The vector index and the schema gate off the request path, on real SQLite databases.

The index keeps its rows grouped by base model (a search within one multiplies only that
block), regroups when rows arrive or move, scores given adapters from one product, runs a due
freshness check in a background thread, and keeps its per-adapter bookkeeping out of the
garbage collector's way. The schema gate re-checks an expired answer in the background and
still refuses once the schema has moved.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.engine import Engine

from lora_manager.api import create_app
from lora_manager.api.schema_gate import SchemaGate
from lora_manager.core.config import load_settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.errors import SchemaNotAtHeadError
from lora_manager.core.models import Adapter, LoraEmbedding, utcnow
from lora_manager.recommendations.embedders import vector_to_bytes
from lora_manager.recommendations.index import VectorIndex
from tests.support.migrate import runner_for
from tests.support.workers import wait_until

DIM = 8
MODEL = "test-model/8"
BASES = ("SD 1.5", "SDXL 1.0", "Flux.1 D")
WAIT = 10.0


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


class Statements:
    """The SQL an engine ran, with the name of the thread that ran it."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[tuple[str, str]] = []
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append((threading.current_thread().name, statement.lower()))

    def threads(self, mark: str) -> list[str]:
        return [thread for thread, statement in self.seen if mark in statement]


class Library:
    """Adapters with hand-made vectors in a migrated SQLite database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(load_settings(database_url=url))
        self.sessions = make_session_factory(self.engine)
        self.vectors: dict[str, np.ndarray] = {}
        self.base: dict[str, str] = {}

    def add(self, count: int, *, triggers: int = 0, start: int = 0) -> list[str]:
        """`count` adapters, base models in turn, each with `triggers` trigger words."""
        added = []
        with self.sessions() as session:
            for n in range(start, start + count):
                base = BASES[n % len(BASES)]
                adapter = Adapter(name=f"a{n}", file_path=f"/loras/a{n}.safetensors")
                adapter.base_model = base
                session.add(adapter)
                session.flush()
                self.vectors[adapter.id] = unit(n)
                self.base[adapter.id] = base
                words = [f"word{n}-{k}" for k in range(triggers)]
                session.add(
                    LoraEmbedding(
                        adapter_id=adapter.id,
                        semantic_embedding=vector_to_bytes(self.vectors[adapter.id]),
                        embedding_model=MODEL,
                        embedding_dim=DIM,
                        normalized_triggers=words,
                        trigger_aliases={word: [word.replace("-", "")] for word in words},
                    )
                )
                added.append(adapter.id)
            session.commit()
        return added

    def move(self, adapter_id: str, base: str) -> None:
        """Another base model for the adapter; its vector row is touched, as a recompute does."""
        with self.sessions.begin() as session:
            session.execute(update(Adapter).where(Adapter.id == adapter_id).values(base_model=base))
            session.execute(
                update(LoraEmbedding)
                .where(LoraEmbedding.adapter_id == adapter_id)
                .values(updated_at=utcnow() + timedelta(seconds=1))
            )
        self.base[adapter_id] = base


@pytest.fixture
def library(migrated_sqlite_url: str) -> Iterator[Library]:
    opened = Library(migrated_sqlite_url)
    yield opened
    opened.engine.dispose()


def assert_grouped(index: VectorIndex, library: Library) -> None:
    """Each base model's rows are one contiguous block, in the order of index.ids."""
    bases = [library.base[adapter_id] for adapter_id in index.ids]
    runs = [b for n, b in enumerate(bases) if n == 0 or bases[n - 1] != b]
    assert len(runs) == len(set(bases)), runs


def test_rows_are_grouped_by_base_model_and_a_search_reads_only_its_block(
    library: Library,
) -> None:
    library.add(30)
    index = VectorIndex(MODEL, DIM, check_interval=0)
    assert index.refresh(library.engine)
    assert len(index) == 30
    assert_grouped(index, library)
    query = unit(1000)
    for base in BASES:
        scores = index.score(query, base)
        assert len(scores.values) == 10
        hits = index.search(query, 30, base_model=base)
        assert {library.base[hit.adapter_id] for hit in hits} == {base}
        expected = sorted(
            (float(library.vectors[a] @ query), a) for a in library.base if library.base[a] == base
        )[::-1]
        assert [hit.adapter_id for hit in hits] == [a for _, a in expected]
        np.testing.assert_allclose([hit.score for hit in hits], [s for s, _ in expected], rtol=1e-5)
    assert len(index.search(query, 100)) == 30
    assert index.search(query, 5, base_model="Pony") == []


def test_scores_of_given_adapters_are_their_cosines_inside_the_block(library: Library) -> None:
    ids = library.add(12)
    index = VectorIndex(MODEL, DIM, check_interval=0)
    index.refresh(library.engine)
    query = unit(7)
    everyone = index.score(query).of([*ids, "not-an-adapter"])
    assert set(everyone) == set(ids)
    for adapter_id in ids:
        assert everyone[adapter_id] == pytest.approx(float(library.vectors[adapter_id] @ query))
    sdxl = index.score(query, "SDXL 1.0").of(ids)
    assert set(sdxl) == {a for a in ids if library.base[a] == "SDXL 1.0"}
    excluded = ids[1]  # SDXL 1.0
    top = index.score(query, "SDXL 1.0").top(10, exclude=[excluded, ids[0]])
    assert excluded not in [hit.adapter_id for hit in top] and len(top) == 3
    # Leaving one out of the top does not change the scores read afterwards.
    scores = index.score(query, "SDXL 1.0")
    scores.top(10, exclude=[excluded])
    assert scores.of([excluded])[excluded] == pytest.approx(sdxl[excluded])


def test_added_and_moved_rows_are_regrouped(library: Library) -> None:
    ids = library.add(9, triggers=1)
    index = VectorIndex(MODEL, DIM, check_interval=0)
    index.refresh(library.engine)
    mover = ids[0]  # SD 1.5
    library.move(mover, "Flux.1 D")
    fresh = library.add(4, start=9)
    assert index.refresh(library.engine)
    assert len(index) == 13
    assert_grouped(index, library)
    query = library.vectors[mover]
    assert index.search(query, 1, base_model="Flux.1 D")[0].adapter_id == mover
    assert mover not in [hit.adapter_id for hit in index.search(query, 20, base_model="SD 1.5")]
    assert index.base_model_of(mover) == "Flux.1 D"
    assert index.vector(mover) == pytest.approx(library.vectors[mover])
    for adapter_id in fresh:
        assert index.vector(adapter_id) == pytest.approx(library.vectors[adapter_id])
        assert index.base_model_of(adapter_id) == library.base[adapter_id]
    # The mover's trigger word moved with it, and was not doubled.
    assert index.triggers["word0-0"] == {mover}


def test_a_due_check_runs_in_the_background_and_the_caller_does_not_wait(
    library: Library,
) -> None:
    library.add(6)
    statements = Statements(library.engine)
    index = VectorIndex(MODEL, DIM, check_interval=0.05)
    assert index.refresh(library.engine)  # the first load: in the caller
    assert set(statements.threads("max(loraembedding.updated_at)")) == {
        threading.current_thread().name
    }
    library.add(3, start=6)
    time.sleep(0.1)
    statements.seen.clear()
    assert index.refresh(library.engine) is False  # due, so started, not awaited
    wait_until(lambda: len(index) == 9, WAIT, lambda: f"index holds {len(index)}")
    checked_in = set(statements.threads("max(loraembedding.updated_at)"))
    assert checked_in == {"vector-index-refresh"}, checked_in
    assert index.refresh(library.engine) is False  # not due again yet: nothing runs
    assert index.refresh(library.engine, force=True) is True  # force: in the caller


def test_a_failing_background_check_is_logged_and_the_index_keeps_serving(
    library: Library, caplog: pytest.LogCaptureFixture
) -> None:
    library.add(6)
    index = VectorIndex(MODEL, DIM, check_interval=0.05)
    index.refresh(library.engine)
    with library.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE loraembedding RENAME TO loraembedding_away")
    time.sleep(0.1)
    with caplog.at_level("WARNING", logger="lora_manager.core.background"):
        index.refresh(library.engine)
        wait_until(lambda: "vector-index-refresh failed" in caplog.text, WAIT, lambda: caplog.text)
    assert "no such table" in caplog.text
    assert len(index.search(unit(3), 3)) == 3


def test_per_adapter_bookkeeping_leaves_nothing_for_the_collector_to_walk(
    library: Library,
) -> None:
    library.add(600, triggers=2)
    index = VectorIndex(MODEL, DIM, check_interval=0)
    gc.collect()
    before = len(gc.get_objects())
    index.refresh(library.engine)
    gc.collect()
    grown = len(gc.get_objects()) - before
    # One set per trigger word and alias is the floor; beyond it, a fixed few hundred (the
    # engine's caches), not a container or three per adapter.
    floor = len(index.triggers) + len(index.aliases)
    assert floor == 2 * 600 * 2
    assert grown - floor < len(index) // 2, (grown, floor)


def test_the_api_loads_the_index_at_start_up(library: Library, tmp_path: Path) -> None:
    ids = library.add(5)
    settings = load_settings(
        database_url=library.url,
        queue_path=tmp_path / "queue.db",
        results_dir=tmp_path / "results",
    )
    app = create_app(settings, migrate_on_startup=False)
    index = app.state.recommender.index
    index.model, index.dim = MODEL, DIM
    with TestClient(app):
        wait_until(lambda: len(index) == 5, WAIT, lambda: f"index holds {len(index)}")
        assert set(index.ids) == set(ids)


# --- the schema gate --------------------------------------------------------------------------


def test_an_expired_schema_answer_is_rechecked_in_the_background(library: Library) -> None:
    statements = Statements(library.engine)
    gate = SchemaGate(library.engine, ttl=0.05)
    gate.ensure_at_head()  # never seen at head: checks in the caller
    assert statements.threads("from alembic_version") == [threading.current_thread().name]
    time.sleep(0.1)
    statements.seen.clear()
    gate.ensure_at_head()  # expired: re-checked behind the caller's back
    wait_until(
        lambda: statements.threads("from alembic_version"), WAIT, lambda: str(statements.seen)
    )
    assert set(statements.threads("from alembic_version")) == {"schema-gate-check"}

    runner_for(library.url).downgrade("f0a1b2c3d4e5")
    time.sleep(0.1)

    def refused() -> bool:
        try:
            gate.ensure_at_head()
        except SchemaNotAtHeadError:
            return True
        return False

    # The background check finds the schema behind; from then on requests are refused.
    wait_until(refused, WAIT, lambda: "the gate still lets requests through")
    with pytest.raises(SchemaNotAtHeadError, match="schema behind: at f0a1b2c3d4e5"):
        gate.ensure_at_head()


def test_a_zero_ttl_checks_in_every_caller(library: Library) -> None:
    statements = Statements(library.engine)
    gate = SchemaGate(library.engine, ttl=0)
    for _ in range(3):
        gate.ensure_at_head()
    assert statements.threads("from alembic_version") == [threading.current_thread().name] * 3
