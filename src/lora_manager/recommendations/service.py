"""The rules of recommendations: what is suggested, why, and what is recorded.

One `Recommender` per process holds the embedder and the vector index. Every answer is recorded
as a `recommendationsession` (so feedback can point at what was shown) and carries a `hint`
when there is nothing to search yet.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from lora_manager.catalog import repository as catalog
from lora_manager.core.config import Settings
from lora_manager.core.db import short_error
from lora_manager.core.errors import InvalidInputError, NotFoundError
from lora_manager.core.models import Adapter, EmbeddingRun, utcnow
from lora_manager.core.queue import JobQueue, QueueError
from lora_manager.recommendations import repository as repo
from lora_manager.recommendations.embedders import (
    Embedder,
    HashedNgramEmbedder,
    MiniLMEmbedder,
    make_embedder,
)
from lora_manager.recommendations.index import VectorIndex
from lora_manager.recommendations.ranking import Candidate, Ranked, rank
from lora_manager.recommendations.repository import Preference as Preference
from lora_manager.recommendations.tasks import enqueue_embedding
from lora_manager.recommendations.text import normalize_trigger

log = logging.getLogger(__name__)

NO_VECTORS_HINT = (
    "no embeddings yet: POST /v1/recommendations/embeddings/recompute (a worker computes them)"
)
# Weight of the prompt text against the active adapters when both are given.
PROMPT_SHARE = 0.6
# A trigger word typed in the prompt is strong evidence; it still ranks after exact twins.
TRIGGER_IN_PROMPT = 0.25
TRIGGER_BONUS_CAP = 2 * TRIGGER_IN_PROMPT
# Trigger matches by kind: exact 1, the same word typed another way, a near spelling (at most).
ALIAS_MATCH = 0.95
NEAR_MATCH_MAX = 0.9
# Candidates fetched before boosts reorder them: boosts are small, so a few more suffice.
OVERFETCH = 3


@dataclass
class Answer:
    items: list[dict[str, Any]] = field(default_factory=list)
    session_id: str | None = None
    hint: str | None = None


class Recommender:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()
        name, dim = model_of(settings.recommendation_embedder)
        self.index = VectorIndex(name, dim, settings.recommendation_index_check)

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = make_embedder(self.settings.recommendation_embedder)
            return self._embedder

    def _encode(self, text: str) -> np.ndarray:
        # EmbedderUnavailable (the [ml] extra missing) is an UnavailableError: a 503.
        vector: np.ndarray = self.embedder.encode([text])[0]
        return vector

    def warm_up(self, ready: Callable[[], bool]) -> threading.Thread:
        """Load the vector index in a background thread, if `ready()` (the schema is at head),
        so the first request after a start does not wait for 100,000 vectors."""

        def load() -> None:
            try:
                if ready():
                    self.index.refresh(self.engine)
            except Exception as exc:  # the first request loads it, or says what is wrong
                log.info("vector index not loaded at start-up: %s", short_error(exc))

        thread = threading.Thread(target=load, name="vector-index-warm-up", daemon=True)
        thread.start()
        return thread

    def _fresh_index(self) -> VectorIndex:
        self.index.refresh(self.engine)
        return self.index

    # -- the three questions ---------------------------------------------------------------

    def similar(
        self,
        session: Session,
        adapter_id: str,
        *,
        limit: int,
        same_base_model: bool,
        exclude: Sequence[str],
        min_score: float,
    ) -> Answer:
        target = repo.adapter_facts(session, [adapter_id]).get(adapter_id)
        if target is None:
            raise NotFoundError(f"no adapter {adapter_id}")
        index = self._fresh_index()
        vector = index.vector(adapter_id)
        if vector is None:
            hint = (
                NO_VECTORS_HINT
                if len(index) == 0
                else (
                    "this adapter has no embedding yet: POST /v1/recommendations/embeddings/"
                    f"recompute with adapter_ids [{adapter_id!r}]"
                )
            )
            return self._record(session, "similar", [], hint=hint, target=adapter_id)
        base_model = target.base_model if same_base_model and target.base_model else None
        hits = index.search(
            vector,
            limit * OVERFETCH,
            exclude=[adapter_id, *exclude],
            base_model=base_model,
            min_score=min_score,
        )
        candidates = [Candidate(h.adapter_id, h.score, [f"similar to {target.name}"]) for h in hits]
        return self._ranked(session, "similar", candidates, limit, target=adapter_id)

    def for_prompt(
        self,
        session: Session,
        prompt: str,
        active: Sequence[str] | None,
        *,
        limit: int,
        base_model: str | None,
    ) -> Answer:
        """`active` None means the adapters active in the catalog."""
        if active is None:
            active = catalog.active_adapter_ids(session)
        index = self._fresh_index()
        names = {a.id: a.name for a in repo.adapter_facts(session, active).values()}
        unknown = [i for i in active if i not in names]
        if unknown:
            raise InvalidInputError(f"unknown adapter ids: {', '.join(unknown)}")
        if len(index) == 0:
            return self._record(session, "prompt", [], hint=NO_VECTORS_HINT, prompt=prompt)
        query = self._encode(prompt) * (PROMPT_SHARE if active else 1.0)
        active_vectors = [v for v in (index.vector(i) for i in active) if v is not None]
        if active_vectors:
            query = query + (1 - PROMPT_SHARE) * np.mean(active_vectors, axis=0)
        norm = float(np.linalg.norm(query))
        query = query / norm if norm else query
        scores = index.score(query, base_model)
        hits = scores.top(limit * OVERFETCH, exclude=active)
        label = "close to your prompt"
        if active_vectors:
            label += " and to " + ", ".join(names[i] for i in active if index.vector(i) is not None)
        similarity = {hit.adapter_id: hit.score for hit in hits}
        close = set(similarity)
        matches = self._trigger_matches(prompt, index, exclude=active)
        # Per holder, how many of the prompt's trigger words it has (counts, not lists: a
        # common word has thousands of holders, and each request would leave them to the GC).
        found: Counter[str] = Counter()
        for holders in matches.values():
            found.update(holders)
        # Holders of another base model are not in `scores`, and drop out.
        similarity.update(scores.of([holder for holder in found if holder not in similarity]))

        # Rank only the likeliest (similarity plus trigger bonus) of hits and holders.
        keys = list(similarity)
        counts = np.fromiter((found[a] for a in keys), dtype=np.float64, count=len(keys))
        # A longer trigger typed in full also matches its first word: that counts.
        bonus = np.minimum(TRIGGER_IN_PROMPT * counts, TRIGGER_BONUS_CAP)
        totals = np.fromiter(similarity.values(), dtype=np.float64, count=len(keys)) + bonus
        likeliest = np.argsort(-totals, kind="stable")[: limit * OVERFETCH]
        candidates = []
        for n in likeliest.tolist():
            adapter_id = keys[n]
            reasons = [label] if adapter_id in close else []
            reasons += [
                f"its trigger word {word!r} is in your prompt"
                for word, holders in matches.items()
                if adapter_id in holders
            ]
            candidates.append(
                Candidate(adapter_id, similarity[adapter_id], reasons, float(bonus[n]))
            )
        return self._ranked(session, "prompt", candidates, limit, prompt=prompt, active=active)

    def by_trigger(self, session: Session, text: str, *, limit: int) -> Answer:
        index = self._fresh_index()
        word = normalize_trigger(text)
        if not word:
            raise InvalidInputError("q has no letters or digits to search for")
        if len(index) == 0:
            return self._record(session, "trigger", [], hint=NO_VECTORS_HINT, prompt=text)
        candidates: dict[str, Candidate] = {}
        # Copies: a background refresh may change these sets while we read them.
        for holder in set(index.triggers.get(word, ())):
            candidates[holder] = Candidate(holder, 1.0, [f"trigger word {word!r}"])
        compact = word.replace(" ", "")
        for holder in index.aliases.get(word, set()) | index.aliases.get(compact, set()):
            candidates.setdefault(
                holder, Candidate(holder, ALIAS_MATCH, [f"trigger word spelled {text!r}"])
            )
        for near, score in index.near_triggers(word):
            for holder in set(index.triggers.get(near, ())):
                candidates.setdefault(
                    holder,
                    Candidate(
                        holder,
                        round(min(score, NEAR_MATCH_MAX), 4),
                        [f"trigger word {near!r} is close"],
                    ),
                )
        ordered = sorted(candidates.values(), key=lambda c: (-c.similarity, c.adapter_id))
        return self._ranked(session, "trigger", ordered[: limit * OVERFETCH], limit, prompt=text)

    # -- shared steps ----------------------------------------------------------------------

    @staticmethod
    def _trigger_matches(
        prompt: str, index: VectorIndex, exclude: Sequence[str]
    ) -> dict[str, set[str]]:
        """Trigger words (of one to four words) that the prompt contains, each with the
        adapters that hold it (but those of `exclude`)."""
        tokens = normalize_trigger(prompt).split()
        left_out = set(exclude)
        phrases = (
            " ".join(tokens[start : start + size])
            for size in range(1, 5)
            for start in range(len(tokens) - size + 1)
        )
        matches = {}
        for phrase in dict.fromkeys(phrases):  # a phrase typed twice counts once
            holders = index.triggers.get(phrase, set()) | index.aliases.get(phrase, set())
            holders -= left_out
            if holders:
                matches[phrase] = holders
        return matches

    def _ranked(
        self,
        session: Session,
        kind: str,
        candidates: Sequence[Candidate],
        limit: int,
        **context: Any,
    ) -> Answer:
        signals = repo.signals(session, [c.adapter_id for c in candidates])
        ranked = rank(candidates, signals, repo.preferences(session), limit)
        items = [_item(entry, signals[entry.adapter_id]) for entry in ranked]
        return self._record(session, kind, items, **context)

    def _record(
        self,
        session: Session,
        kind: str,
        items: list[dict[str, Any]],
        hint: str | None = None,
        **context: Any,
    ) -> Answer:
        session_id = repo.record_session(session, kind=kind, items=items, **context)
        session.commit()
        return Answer(items=items, session_id=session_id, hint=hint)

    # -- bookkeeping -----------------------------------------------------------------------

    def stats(self, session: Session) -> dict[str, Any]:
        index = self._fresh_index()
        total = repo.count_adapters(session)
        current, other = repo.embedding_counts(session, index.model)
        return {
            "adapters": total,
            "embedded": current,
            "coverage": round(current / total, 4) if total else 0.0,
            "other_model": other,
            "model": index.model,
            "dim": index.dim,
            "embedder": self.settings.recommendation_embedder,
            "index_size": len(index),
            "index_loaded_at": index.loaded_at,
        }


def _item(entry: Ranked, signal: repo.Signals) -> dict[str, Any]:
    adapter = signal.adapter
    return {
        "adapter_id": adapter.id,
        "name": adapter.name,
        "base_model": adapter.base_model,
        "similarity": round(entry.similarity, 4),
        "score": round(entry.score, 4),
        "reasons": entry.reasons,
    }


def model_of(kind: str) -> tuple[str, int]:
    """The stored model name and dimension of an embedder kind, without loading it."""
    if kind == "light":
        light = HashedNgramEmbedder()
        return light.name, light.dim
    return MiniLMEmbedder.name, MiniLMEmbedder.dim


def record_feedback(
    session: Session, session_id: str, adapter_id: str, kind: str, reason: str | None
) -> None:
    record = repo.get_session(session, session_id)
    if record is None:
        raise NotFoundError(f"no recommendation session {session_id}")
    shown = {item.get("adapter_id") for item in record.recommendations or []}
    if adapter_id not in shown:
        raise InvalidInputError(f"adapter {adapter_id} was not suggested in session {session_id}")
    try:
        repo.add_feedback(session, record, adapter_id, kind, reason)
        session.commit()
    except IntegrityError:
        # The adapter was deleted after it was suggested (its foreign key has nothing to hold).
        session.rollback()
        if session.get(Adapter, adapter_id) is not None:
            raise
        raise NotFoundError(f"adapter {adapter_id} no longer exists") from None


def preferences(session: Session) -> list[Preference]:
    return repo.preferences(session)


def set_preferences(session: Session, wanted: Sequence[tuple[str, str, float]]) -> list[Preference]:
    """Replace the explicit preferences; all of them afterwards, learned ones included."""
    repo.replace_explicit_preferences(session, wanted)
    session.commit()
    return repo.preferences(session)


def get_run(session: Session, run_id: str) -> EmbeddingRun:
    run = repo.get_run(session, run_id)
    if run is None:
        raise NotFoundError(f"no embedding run {run_id}")
    return run


def start_run(
    session: Session, model: str, adapter_ids: Sequence[str] | None, force: bool
) -> EmbeddingRun:
    if adapter_ids is not None:
        found = {a.id for a in catalog.get_adapters(session, list(adapter_ids))}
        unknown = [i for i in adapter_ids if i not in found]
        if unknown:
            raise InvalidInputError(f"unknown adapter ids: {', '.join(unknown)}")
    run = EmbeddingRun(
        status="pending",
        model=model,
        adapter_ids=list(adapter_ids) if adapter_ids is not None else None,
        force=force,
        done=0,
        created_at=utcnow(),
    )
    session.add(run)
    session.commit()
    return run


def queue_run(
    session: Session,
    queue: JobQueue,
    model: str,
    adapter_ids: Sequence[str] | None,
    force: bool,
) -> EmbeddingRun:
    """Start an embedding run and queue it for a worker (recorded as failed if it cannot be)."""
    run = start_run(session, model, adapter_ids, force)
    _enqueue(session, queue, run)
    return run


def _enqueue(session: Session, queue: JobQueue, run: EmbeddingRun) -> str | None:
    """Queue the run for a worker; if the queue cannot take it, the run is recorded as failed
    and the reason returned."""
    try:
        enqueue_embedding(queue, run.id)
    except QueueError as exc:
        run.status, run.error = "failed", str(exc)
        session.commit()
        return str(exc)
    return None


def refresh_after_import(sessions: sessionmaker[Session], settings: Settings) -> str | None:
    """Queue an embedding run for what an import changed (unchanged vectors are skipped);
    the run id, or None if the queue cannot be reached (the next import or a recompute will)."""
    model, _ = model_of(settings.recommendation_embedder)
    with sessions() as session:
        run = start_run(session, model, None, force=False)
        error = _enqueue(session, JobQueue(settings), run)
        if error is not None:
            log.warning("embeddings not queued after the import: %s", error)
            return None
        return run.id


def queue_if_stale(sessions: sessionmaker[Session], settings: Settings) -> str | None:
    """If some adapters lack a current vector (new ones, or RECOMMENDATION_EMBEDDER changed)
    and no run is waiting for them, queue one; its id, else None."""
    model, _ = model_of(settings.recommendation_embedder)
    with sessions() as session:
        current, _ = repo.embedding_counts(session, model)
        if current >= repo.count_adapters(session) or repo.open_run_exists(session, model):
            return None
    return refresh_after_import(sessions, settings)
