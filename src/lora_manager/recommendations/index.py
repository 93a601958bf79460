"""An in-memory vector index per process: the stored vectors of one model, searched exactly.

Loaded from `loraembedding` (the stored float32 bytes, never re-encoded) and kept fresh by a
cheap version query (row count and latest update) asked at most every `check_interval`
seconds: newer rows are merged in, and a count that no longer matches means rows were deleted,
so the index reloads whole. Search is exact cosine similarity: one matrix-vector product over
L2-normalised rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from lora_manager.models import Adapter, LoraEmbedding, utcnow
from lora_manager.recommendations.embedders import vector_from_bytes

_E = LoraEmbedding.__table__.c
# Rows stamped before the last refresh may commit after it: re-read this much of the past.
COMMIT_SLACK = timedelta(minutes=2)
_A = Adapter.__table__.c


@dataclass
class Hit:
    adapter_id: str
    score: float


@dataclass
class _Rows:
    ids: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    base_models: list[str] = field(default_factory=list)
    triggers: list[list[str]] = field(default_factory=list)
    aliases: list[list[str]] = field(default_factory=list)


class VectorIndex:
    """Vectors of one embedding model; thread-safe; search never blocks on a refresh."""

    def __init__(self, model: str, dim: int, check_interval: float = 2.0) -> None:
        self.model = model
        self.dim = dim
        self.check_interval = check_interval
        self.ids: list[str] = []
        self.matrix = np.zeros((0, dim), dtype=np.float32)
        self.base_models = np.zeros(0, dtype=object)
        # Base models as small integers: comparing 100,000 strings costs more than the search.
        self.base_codes = np.zeros(0, dtype=np.int32)
        self._codes: dict[str, int] = {}
        # Trigger word (normalised) or alias → the adapters that have it.
        self.triggers: dict[str, set[str]] = {}
        self.aliases: dict[str, set[str]] = {}
        # Each adapter's (words, aliases), so a refreshed row drops only its own entries.
        self._words_of: dict[str, tuple[list[str], list[str]]] = {}
        self._grams: dict[str, set[str]] | None = None
        self.loaded_at: datetime | None = None
        self._position: dict[str, int] = {}
        self._version: tuple[int, datetime | None] = (-1, None)
        self._checked = 0.0
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    # -- loading ---------------------------------------------------------------------------

    def _version_now(self, engine: Engine) -> tuple[int, datetime | None]:
        # Answered from ix_loraembedding_model_updated alone (rows are written with a vector).
        query = select(func.count(), func.max(_E.updated_at)).where(
            _E.embedding_model == self.model
        )
        with engine.connect() as connection:
            count, latest = connection.execute(query).one()
        return int(count), latest

    def _read(self, engine: Engine, since: datetime | None) -> _Rows:
        query = (
            select(
                _E.adapter_id,
                _E.semantic_embedding,
                _E.normalized_triggers,
                _E.trigger_aliases,
                _A.base_model,
            )
            .join(Adapter.__table__, _A.id == _E.adapter_id)
            .where(_E.embedding_model == self.model, _E.semantic_embedding.is_not(None))
        )
        if since is not None:
            query = query.where(_E.updated_at >= since)
        rows = _Rows()
        with engine.connect() as connection:
            for adapter_id, blob, triggers, aliases, base_model in connection.execute(query):
                if len(blob) != 4 * self.dim:
                    continue  # a vector of another dimension: the recompute will replace it
                rows.ids.append(adapter_id)
                rows.vectors.append(vector_from_bytes(bytes(blob), self.dim))
                rows.base_models.append(base_model or "")
                rows.triggers.append(list(triggers or []))
                rows.aliases.append([a for spelled in (aliases or {}).values() for a in spelled])
        return rows

    def refresh(self, engine: Engine, *, force: bool = False) -> bool:
        """Bring the index up to date if the table changed; True if it did change. While one
        thread refreshes, the others search what is loaded instead of waiting (unless nothing
        is loaded yet)."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return False
        if not self._refreshing.acquire(blocking=force or self.loaded_at is None):
            return False
        try:
            return self._refresh(engine, now, force)
        finally:
            self._refreshing.release()

    def _refresh(self, engine: Engine, now: float, force: bool) -> bool:
        self._checked = now
        version = self._version_now(engine)
        if version == self._version and not force:
            return False
        count, _ = version
        incremental = self._version[0] >= 0 and count >= len(self.ids) and not force
        since = self._version[1] - COMMIT_SLACK if incremental and self._version[1] else None
        rows = self._read(engine, since if incremental else None)
        with self._lock:
            if incremental:
                self._merge(rows)
            else:
                self._replace(rows)
            if len(self.ids) != count:  # rows deleted and added since: start over
                self._replace(self._read(engine, None))
            self._version = version
            self.loaded_at = utcnow()
        return True

    def _replace(self, rows: _Rows) -> None:
        self.ids = rows.ids
        self._position = {adapter_id: n for n, adapter_id in enumerate(rows.ids)}
        self.matrix = (
            np.vstack(rows.vectors).astype(np.float32, copy=False)
            if rows.vectors
            else np.zeros((0, self.dim), dtype=np.float32)
        )
        self.base_models = np.array(rows.base_models, dtype=object)
        self.base_codes = np.array([self._code(b) for b in rows.base_models], dtype=np.int32)
        self.triggers, self.aliases, self._words_of, self._grams = {}, {}, {}, None
        for n, adapter_id in enumerate(rows.ids):
            self._add_triggers(adapter_id, rows.triggers[n], rows.aliases[n])

    def _merge(self, rows: _Rows) -> None:
        fresh: list[int] = []
        matrix, base_models, codes = self.matrix, self.base_models, self.base_codes
        for n, adapter_id in enumerate(rows.ids):
            at = self._position.get(adapter_id)
            if at is None:
                fresh.append(n)
            else:
                matrix[at] = rows.vectors[n]
                base_models[at] = rows.base_models[n]
                codes[at] = self._code(rows.base_models[n])
            self._drop_triggers(adapter_id)
            self._add_triggers(adapter_id, rows.triggers[n], rows.aliases[n])
        if fresh:
            start = len(self.ids)
            self.ids = [*self.ids, *(rows.ids[n] for n in fresh)]
            for offset, n in enumerate(fresh):
                self._position[rows.ids[n]] = start + offset
            self.matrix = np.vstack([matrix, *(rows.vectors[n][None, :] for n in fresh)])
            added = np.array([rows.base_models[n] for n in fresh], dtype=object)
            self.base_models = np.concatenate([base_models, added])
            more = np.array([self._code(rows.base_models[n]) for n in fresh], dtype=np.int32)
            self.base_codes = np.concatenate([codes, more])

    def _code(self, base_model: str) -> int:
        return self._codes.setdefault(base_model, len(self._codes))

    def _add_triggers(self, adapter_id: str, words: Iterable[str], aliases: Iterable[str]) -> None:
        words, aliases = list(words), list(aliases)
        for word in words:
            self.triggers.setdefault(word, set()).add(adapter_id)
        for alias in aliases:
            self.aliases.setdefault(alias, set()).add(adapter_id)
        self._words_of[adapter_id] = (words, aliases)
        self._grams = None

    def _drop_triggers(self, adapter_id: str) -> None:
        # Only the adapter's own words: a refresh of a few rows must not walk every trigger.
        words, aliases = self._words_of.pop(adapter_id, ([], []))
        for table, keys in ((self.triggers, words), (self.aliases, aliases)):
            for key in keys:
                holders = table.get(key)
                if holders is not None:
                    holders.discard(adapter_id)
                    if not holders:
                        del table[key]

    # -- searching -------------------------------------------------------------------------

    def vector(self, adapter_id: str) -> np.ndarray | None:
        at = self._position.get(adapter_id)
        return None if at is None else self.matrix[at]

    def base_model_of(self, adapter_id: str) -> str | None:
        at = self._position.get(adapter_id)
        return None if at is None else str(self.base_models[at])

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        exclude: Sequence[str] = (),
        base_model: str | None = None,
        min_score: float = -1.0,
    ) -> list[Hit]:
        """The k rows most similar to `query` (cosine), best first."""
        with self._lock:
            matrix, ids, codes, position = (
                self.matrix,
                self.ids,
                self.base_codes,
                self._position,
            )
            code = self._codes.get(base_model) if base_model is not None else None
        if not ids or k <= 0 or (base_model is not None and code is None):
            return []
        scores = matrix @ np.asarray(query, dtype=np.float32)
        if code is not None:
            scores[codes != code] = -np.inf
        for adapter_id in exclude:
            at = position.get(adapter_id)
            if at is not None and at < len(scores):
                scores[at] = -np.inf
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [
            Hit(ids[n], float(scores[n]))
            for n in top
            if np.isfinite(scores[n]) and scores[n] >= min_score
        ]

    def near_triggers(self, word: str, threshold: float = 0.45) -> list[tuple[str, float]]:
        """Trigger words spelled like `word`: Jaccard similarity of their character 3-grams."""
        with self._lock:
            if self._grams is None:
                grams: dict[str, set[str]] = {}
                for trigger in self.triggers:
                    for gram in trigrams(trigger):
                        grams.setdefault(gram, set()).add(trigger)
                self._grams = grams
            postings = self._grams
        wanted = trigrams(word)
        shared: dict[str, int] = {}
        for gram in wanted:
            for trigger in postings.get(gram, ()):
                shared[trigger] = shared.get(trigger, 0) + 1
        found = []
        for trigger, common in shared.items():
            score = common / (len(wanted) + len(trigrams(trigger)) - common)
            if score >= threshold:
                found.append((trigger, score))
        found.sort(key=lambda item: (-item[1], item[0]))
        return found


def trigrams(word: str) -> set[str]:
    """Character 3-grams of a word padded at both ends, spaces ignored ("ink wash" ~ "inkwash")."""
    padded = f"  {word.replace(' ', '')} "
    return {padded[n : n + 3] for n in range(len(padded) - 2)}
