"""Compute and store adapter embeddings: the text vector, and one vector per trigger word.

An adapter is (re)embedded when it has no vector, when its vector came from another model, or
when the text it was computed from changed (`source_hash`); `force` recomputes all. Vectors
are stored as little-endian float32 bytes (trigger vectors as base64 of the same), never
pickled. Runs go through the job queue and record their progress in `embeddingrun`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from lora_manager.core.models import Adapter, EmbeddingRun, LoraEmbedding, utcnow
from lora_manager.recommendations import repository as repo
from lora_manager.recommendations.embedders import Embedder, vector_to_bytes
from lora_manager.recommendations.text import (
    TriggerEntry,
    adapter_text,
    source_hash,
    trigger_aliases,
    trigger_entries,
)

log = logging.getLogger(__name__)

BATCH = 256


@dataclass
class EmbedCount:
    computed: int = 0
    unchanged: int = 0


def embed_adapters(
    sessions: sessionmaker[Session],
    embedder: Embedder,
    *,
    only: Sequence[str] | None = None,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> EmbedCount:
    """Embed every adapter (or `only` these) that needs it, a batch per transaction.

    An adapter deleted while its batch is computed is skipped: the batch's commit fails on it
    (its foreign key, or its cascaded vector row), and the batch is read and stored again
    without it."""
    count = EmbedCount()
    after: str | None = None
    while True:
        with sessions() as session:
            for attempt in range(2):
                try:
                    done = _embed_batch(session, embedder, after, only, force)
                    break
                except (IntegrityError, StaleDataError):
                    session.rollback()
                    if attempt:
                        raise
                    log.info("an adapter was deleted during embedding: batch stored again")
            if done is None:
                break
            after, computed, unchanged = done
            count.computed += computed
            count.unchanged += unchanged
        if on_progress is not None:
            on_progress(count.computed + count.unchanged)
    return count


def _embed_batch(
    session: Session, embedder: Embedder, after: str | None, only: Sequence[str] | None, force: bool
) -> tuple[str, int, int] | None:
    """Embed and commit the next batch: (its last id, computed, unchanged), None at the end."""
    page = repo.adapters_page(session, after, BATCH, only)
    if not page:
        return None
    todo = []
    for adapter, stored in page:
        text = adapter_text(adapter)
        digest = source_hash(text, embedder.name)
        fresh = (
            stored is not None
            and stored.embedding_model == embedder.name
            and stored.source_hash == digest
            and stored.semantic_embedding is not None
        )
        if force or not fresh:
            todo.append((adapter, stored, text, digest))
    if todo:
        _store(session, embedder, todo)
        session.commit()
    return page[-1][0].id, len(todo), len(page) - len(todo)


def _store(
    session: Session,
    embedder: Embedder,
    todo: list[tuple[Adapter, LoraEmbedding | None, str, str]],
) -> None:
    vectors = embedder.encode([text for _, _, text, _ in todo])
    entries = [trigger_entries(adapter) for adapter, _, _, _ in todo]
    words = [entry.normalized for found in entries for entry in found]
    word_vectors = embedder.encode(words) if words else None
    at = 0
    now = utcnow()
    for (adapter, stored, _, digest), vector, found in zip(todo, vectors, entries, strict=True):
        row = stored or LoraEmbedding(adapter_id=adapter.id, created_at=now)
        row.semantic_embedding = vector_to_bytes(vector)
        row.embedding_model = embedder.name
        row.embedding_dim = embedder.dim
        row.source_hash = digest
        row.normalized_triggers = [entry.normalized for entry in found]
        row.trigger_aliases = trigger_aliases(found)
        row.trigger_metadata = _trigger_metadata(found)
        encoded = []
        for _ in found:
            assert word_vectors is not None
            encoded.append(base64.b64encode(vector_to_bytes(word_vectors[at])).decode("ascii"))
            at += 1
        row.trigger_embeddings = encoded
        row.last_computed = now
        row.updated_at = now
        if stored is None:
            session.add(row)


def _trigger_metadata(entries: list[TriggerEntry]) -> dict[str, dict[str, str]]:
    return {
        entry.normalized: {"original": entry.original, "source": entry.source} for entry in entries
    }


def run_embedding(sessions: sessionmaker[Session], embedder: Embedder, run_id: str) -> None:
    """Carry out one queued run (a worker task); a second delivery of it finds nothing to do."""
    with sessions() as session:
        if not repo.claim_run(session, run_id):
            session.rollback()
            return
        session.commit()
        run = repo.get_run(session, run_id)
        assert run is not None
        only, force = run.adapter_ids, run.force
        run.total = repo.count_adapters(session, only)
        session.commit()

    def progress(done: int) -> None:
        with sessions() as session:
            found = session.get(EmbeddingRun, run_id)
            if found is not None:
                found.done = done
                found.heartbeat_at = utcnow()
                session.commit()

    try:
        counted = embed_adapters(sessions, embedder, only=only, force=force, on_progress=progress)
    except Exception as exc:
        log.exception("embedding run %s failed", run_id)
        _end(sessions, run_id, "failed", f"{type(exc).__name__}: {exc}"[:500])
        return
    log.info(
        "embedding run %s: %d computed, %d unchanged", run_id, counted.computed, counted.unchanged
    )
    _end(sessions, run_id, "succeeded", None)


def _end(sessions: sessionmaker[Session], run_id: str, status: str, error: str | None) -> None:
    with sessions() as session:
        run = session.get(EmbeddingRun, run_id)
        if run is not None:
            run.status = status
            run.error = error
            run.finished_at = utcnow()
            session.commit()
