"""An in-memory vector index per process: the stored vectors of one model, searched exactly.

Loaded from `loraembedding` (the stored float32 bytes, never re-encoded) and kept fresh by a
cheap version query (row count and latest update): newer rows are merged in, and a count that
no longer matches means rows were deleted, so the index reloads whole. The first load happens
in the caller; after it, a check that is due runs in a background thread and searches go on
with what is loaded, so no request waits for the database. With `check_interval` 0 every call
checks in the caller (tests, and anyone who wants each answer to see the latest vectors).

Rows are kept grouped by base model (one contiguous block each), so a search within one base
model multiplies only its block. Search is exact cosine similarity: one matrix-vector product
over L2-normalised rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import compress, pairwise

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from lora_manager.core.background import start_in_background
from lora_manager.core.models import Adapter, LoraEmbedding, utcnow
from lora_manager.recommendations.embedders import vector_from_bytes, vectors_from_bytes

_E = LoraEmbedding.__table__.c
# Rows stamped before the last refresh may commit after it: re-read this much of the past.
COMMIT_SLACK = timedelta(minutes=2)
_A = Adapter.__table__.c


@dataclass
class Hit:
    adapter_id: str
    score: float


@dataclass(frozen=True)
class _Table:
    """The searchable rows, replaced whole (readers take one reference, without a lock):
    row n is ids[n], matrix[n], codes[n]; rows sorted by base-model code, each code's rows
    one block [start, end)."""

    ids: list[str]
    matrix: np.ndarray
    codes: np.ndarray
    position: dict[str, int]
    blocks: dict[int, tuple[int, int]]

    @classmethod
    def empty(cls, dim: int) -> _Table:
        return cls.from_sorted(
            [], np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.int32)
        )

    @classmethod
    def from_sorted(cls, ids: list[str], matrix: np.ndarray, codes: np.ndarray) -> _Table:
        """From rows already sorted by code."""
        bounds = [0, *(np.flatnonzero(np.diff(codes)) + 1).tolist(), len(ids)] if ids else []
        blocks = {int(codes[start]): (start, end) for start, end in pairwise(bounds)}
        position = {adapter_id: n for n, adapter_id in enumerate(ids)}
        return cls(ids, matrix, codes, position, blocks)


@dataclass(frozen=True)
class Scores:
    """Similarities of one query to a block of rows: the best of them, or those of given ids."""

    table: _Table
    start: int
    values: np.ndarray

    def _at(self, adapter_id: str) -> int | None:
        at = self.table.position.get(adapter_id)
        if at is None or not self.start <= at < self.start + len(self.values):
            return None
        return at - self.start

    def top(self, k: int, *, exclude: Sequence[str] = (), min_score: float = -1.0) -> list[Hit]:
        """The k best rows, best first; none of `exclude`, none under `min_score`."""
        values = self.values
        left_out = [n for n in map(self._at, exclude) if n is not None]
        if left_out:
            values = values.copy()
            values[left_out] = -np.inf
        k = min(k, len(values))
        if k <= 0:
            return []
        top = np.argpartition(-values, k - 1)[:k]
        top = top[np.argsort(-values[top], kind="stable")]
        return [
            Hit(self.table.ids[self.start + n], float(values[n]))
            for n in top
            if np.isfinite(values[n]) and values[n] >= min_score
        ]

    def of(self, adapter_ids: Iterable[str]) -> dict[str, float]:
        """The similarity of each of these adapters that is in the block (thousands at a
        time: a common trigger word's holders)."""
        position = self.table.position
        ids = list(adapter_ids)
        # An id not indexed gets -1, which lands before the block like other blocks' rows.
        rows = np.fromiter((position.get(a, -1) for a in ids), dtype=np.intp, count=len(ids))
        rows -= self.start
        inside = (rows >= 0) & (rows < len(self.values))
        values = self.values[rows[inside]].tolist()
        return dict(zip(compress(ids, inside.tolist()), values, strict=True))


@dataclass
class _Rows:
    ids: list[str] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)
    base_models: list[str] = field(default_factory=list)
    triggers: list[list[str]] = field(default_factory=list)
    aliases: list[list[str]] = field(default_factory=list)


class VectorIndex:
    """Vectors of one embedding model; thread-safe; search never blocks on a refresh."""

    def __init__(self, model: str, dim: int, check_interval: float = 2.0) -> None:
        self.model = model
        self.dim = dim
        self.check_interval = check_interval
        self._table = _Table.empty(dim)
        # Base models as small integers: comparing 100,000 strings costs more than the search.
        self._codes: dict[str, int] = {}
        self._names: list[str] = []
        # Trigger word (normalised) or alias → the adapters that have it.
        self.triggers: dict[str, set[str]] = {}
        self.aliases: dict[str, set[str]] = {}
        # Each adapter's (words, aliases), so a refreshed row drops only its own entries.
        self._words_of: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._grams: dict[str, set[str]] | None = None
        self.loaded_at: datetime | None = None
        self._version: tuple[int, datetime | None] = (-1, None)
        self._checked = 0.0
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()

    def __len__(self) -> int:
        return len(self._table.ids)

    @property
    def ids(self) -> list[str]:
        return self._table.ids

    @property
    def matrix(self) -> np.ndarray:
        return self._table.matrix

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
        size = 4 * self.dim
        with engine.connect() as connection:
            for adapter_id, blob, triggers, aliases, base_model in connection.execute(query):
                if len(blob) != size:
                    continue  # a vector of another dimension: the recompute will replace it
                rows.ids.append(adapter_id)
                rows.blobs.append(bytes(blob))
                rows.base_models.append(base_model or "")
                rows.triggers.append(list(triggers or []))
                rows.aliases.append([a for spelled in (aliases or {}).values() for a in spelled])
        return rows

    def refresh(self, engine: Engine, *, force: bool = False) -> bool:
        """Bring the index up to date if the table changed; True if this call changed it.

        The first load (and `force`) runs here, waiting for any refresh under way. Once loaded,
        a due check runs in a background thread and this returns False at once."""
        if not force and self.loaded_at is not None:
            if time.monotonic() - self._checked < self.check_interval:
                return False
            if self.check_interval > 0:
                start_in_background(
                    self._refreshing, lambda: self._refresh(engine, False), "vector-index-refresh"
                )
                return False
        if not self._refreshing.acquire(blocking=force or self.loaded_at is None):
            return False
        try:
            return self._refresh(engine, force)
        finally:
            self._refreshing.release()

    def _refresh(self, engine: Engine, force: bool) -> bool:
        self._checked = time.monotonic()
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
        codes = [self._code(base_model) for base_model in rows.base_models]
        order = sorted(range(len(rows.ids)), key=codes.__getitem__)  # stable: blocks by code
        self._table = _Table.from_sorted(
            [rows.ids[n] for n in order],
            vectors_from_bytes([rows.blobs[n] for n in order], self.dim),
            np.array([codes[n] for n in order], dtype=np.int32),
        )
        self.triggers, self.aliases, self._words_of, self._grams = {}, {}, {}, None
        for n, adapter_id in enumerate(rows.ids):
            self._add_triggers(adapter_id, rows.triggers[n], rows.aliases[n])

    def _merge(self, rows: _Rows) -> None:
        """Rows that keep their base model change in place; new rows and rows that moved to
        another base model make a new, regrouped table."""
        table = self._table
        moved: list[int] = []  # positions of rows whose base model changed
        added: list[int] = []  # entries of `rows` to append
        for n, adapter_id in enumerate(rows.ids):
            code = self._code(rows.base_models[n])
            at = table.position.get(adapter_id)
            if at is not None and table.codes[at] == code:
                table.matrix[at] = vector_from_bytes(rows.blobs[n], self.dim)
            else:
                if at is not None:
                    moved.append(at)
                added.append(n)
            self._drop_triggers(adapter_id)
            self._add_triggers(adapter_id, rows.triggers[n], rows.aliases[n])
        if not added:
            return
        keep = np.ones(len(table.ids), dtype=bool)
        keep[moved] = False
        ids = [adapter_id for adapter_id, kept in zip(table.ids, keep, strict=True) if kept]
        ids += [rows.ids[n] for n in added]
        fresh = vectors_from_bytes([rows.blobs[n] for n in added], self.dim)
        matrix = np.vstack([table.matrix[keep], fresh])
        more = np.array([self._code(rows.base_models[n]) for n in added], dtype=np.int32)
        codes = np.concatenate([table.codes[keep], more])
        order = np.argsort(codes, kind="stable")
        self._table = _Table.from_sorted([ids[n] for n in order], matrix[order], codes[order])

    def _code(self, base_model: str) -> int:
        code = self._codes.get(base_model)
        if code is None:
            code = self._codes[base_model] = len(self._names)
            self._names.append(base_model)
        return code

    def _add_triggers(self, adapter_id: str, words: Iterable[str], aliases: Iterable[str]) -> None:
        # Tuples of strings: the garbage collector stops tracking them, so 100,000 adapters
        # do not make every full collection walk 300,000 containers.
        entry = (tuple(words), tuple(aliases))
        for word in entry[0]:
            self.triggers.setdefault(word, set()).add(adapter_id)
        for alias in entry[1]:
            self.aliases.setdefault(alias, set()).add(adapter_id)
        if entry[0] or entry[1]:
            self._words_of[adapter_id] = entry
        self._grams = None

    def _drop_triggers(self, adapter_id: str) -> None:
        # Only the adapter's own words: a refresh of a few rows must not walk every trigger.
        words, aliases = self._words_of.pop(adapter_id, ((), ()))
        for table, keys in ((self.triggers, words), (self.aliases, aliases)):
            for key in keys:
                holders = table.get(key)
                if holders is not None:
                    holders.discard(adapter_id)
                    if not holders:
                        del table[key]

    # -- searching -------------------------------------------------------------------------

    def vector(self, adapter_id: str) -> np.ndarray | None:
        table = self._table
        at = table.position.get(adapter_id)
        return None if at is None else table.matrix[at]

    def base_model_of(self, adapter_id: str) -> str | None:
        table = self._table
        at = table.position.get(adapter_id)
        return None if at is None else self._names[table.codes[at]]

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
        return self.score(query, base_model).top(k, exclude=exclude, min_score=min_score)

    def score(self, query: np.ndarray, base_model: str | None = None) -> Scores:
        """Cosine similarity of `query` to every row (of `base_model`'s block, if given)."""
        table = self._table
        if base_model is None:
            start, end = 0, len(table.ids)
        else:
            code = self._codes.get(base_model)
            start, end = table.blocks.get(code, (0, 0)) if code is not None else (0, 0)
        values = table.matrix[start:end] @ np.asarray(query, dtype=np.float32)
        return Scores(table, start, values)

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
