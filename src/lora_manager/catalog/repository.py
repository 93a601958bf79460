"""Queries over the adapter catalog: nothing else in the code knows these tables' SQL."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Select,
    String,
    bindparam,
    column,
    delete,
    desc,
    exists,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from lora_manager.core.models import Adapter, AdapterTag

# Words a search matches by prefix: letters and digits, as FTS5's unicode61 and PostgreSQL's
# 'simple' parser split them.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SEARCH_TEXT_LIMIT = 8000

SORT_COLUMNS: dict[str, Any] = {
    "name": func.lower(Adapter.name),
    "created": Adapter.created_at,
    "updated": Adapter.updated_at,
    "published": Adapter.published_at,
    "size": Adapter.file_size,
    "downloads": Adapter.download_count,
    "rating": Adapter.rating,
    "ordinal": Adapter.ordinal,
}


NULLABLE_SORTS = {"published", "size", "downloads", "rating", "ordinal"}


def normalise_tag(tag: str) -> str:
    return " ".join(tag.strip().lower().split())


def search_words(query: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(query)][:16]


def build_search_text(adapter: Adapter) -> str:
    """What full-text search sees: name, description, tags, triggers and author, lower-case."""
    parts: list[str] = [adapter.name or "", adapter.version or "", adapter.author_username or ""]
    for values in (adapter.tags, adapter.user_tags, adapter.trained_words, adapter.triggers):
        parts.extend(str(value) for value in values or [])
    parts.append(adapter.activation_text or "")
    parts.append(adapter.base_model or "")
    parts.append(adapter.description or "")
    return " ".join(part for part in parts if part).lower()[:_SEARCH_TEXT_LIMIT]


@dataclass
class AdapterFilters:
    """Everything GET /adapters can filter on; None means "don't filter"."""

    q: str | None = None
    tags_any: list[str] = field(default_factory=list)
    tags_all: list[str] = field(default_factory=list)
    base_model: list[str] = field(default_factory=list)
    active: bool | None = None
    favorite: bool | None = None
    rating_min: int | None = None
    nsfw_max: int | None = None
    missing: bool | None = None
    has_preview: bool | None = None
    ingest_status: str | None = None


def _fts_phrases(words: list[str]) -> str:
    return "body : (" + " AND ".join(f'"{word}"*' for word in words) + ")"


def _fts_ids(ids: Sequence[str]) -> str:
    quoted = " OR ".join('"' + adapter_id.replace('"', '""') + '"' for adapter_id in ids)
    return f"adapter_id : ({quoted})"


def _search_clause(session: Session, words: list[str]) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        matching = (
            text("SELECT adapter_id FROM adapter_fts WHERE adapter_fts MATCH :match")
            .bindparams(bindparam("match", _fts_phrases(words)))
            .columns(column("adapter_id", String))
        )
        return Adapter.id.in_(matching.subquery().select())
    query = " & ".join(f"{word}:*" for word in words)
    vector = func.to_tsvector(literal_column("'simple'"), func.coalesce(Adapter.search_text, ""))
    return vector.op("@@")(func.to_tsquery(literal_column("'simple'"), query))


def _tag_clause(tags: list[str], *, for_count: bool) -> Any:
    # Counting, a semi-join over the tag index beats probing it once per adapter; paging in
    # name order, the probe lets the name index stop after one page.
    if for_count:
        return Adapter.id.in_(select(AdapterTag.adapter_id).where(AdapterTag.tag.in_(tags)))
    return exists().where(AdapterTag.adapter_id == Adapter.id, AdapterTag.tag.in_(tags))


def _conditions(session: Session, filters: AdapterFilters, *, for_count: bool = False) -> list[Any]:
    conditions: list[Any] = []
    words = search_words(filters.q or "")
    if words:
        conditions.append(_search_clause(session, words))
    if filters.tags_any:
        tags = [normalise_tag(t) for t in filters.tags_any]
        conditions.append(_tag_clause(tags, for_count=for_count))
    for tag in filters.tags_all:
        conditions.append(_tag_clause([normalise_tag(tag)], for_count=for_count))
    if filters.base_model:
        conditions.append(Adapter.base_model.in_(filters.base_model))
    if filters.active is not None:
        conditions.append(Adapter.active == filters.active)
    if filters.favorite is not None:
        conditions.append(Adapter.is_favorite == filters.favorite)
    if filters.rating_min is not None:
        conditions.append(Adapter.rating >= filters.rating_min)
    if filters.nsfw_max is not None:
        conditions.append(Adapter.nsfw_level <= filters.nsfw_max)
    if filters.missing is not None:
        missing = Adapter.ingest_status == "missing"
        conditions.append(missing if filters.missing else Adapter.ingest_status != "missing")
    if filters.has_preview is not None:
        present = Adapter.preview_path.is_not(None)
        conditions.append(present if filters.has_preview else Adapter.preview_path.is_(None))
    if filters.ingest_status is not None:
        conditions.append(Adapter.ingest_status == filters.ingest_status)
    return conditions


def list_adapters(
    session: Session,
    filters: AdapterFilters,
    *,
    sort: str = "name",
    descending: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> tuple[Sequence[Adapter], int]:
    """One page in a stable order (ties broken by id) and the total matching count."""
    total = count_adapters(session, filters)
    column = SORT_COLUMNS[sort]
    ordered = desc(column) if descending else column
    if sort in NULLABLE_SORTS:
        ordered = ordered.nulls_last()  # missing values last either way: real data first
    conditions = _conditions(session, filters)
    # Page through ids alone (an index-only walk, even deep), then fetch just those rows.
    ids = (
        select(Adapter.id)
        .where(*conditions)
        .order_by(ordered, Adapter.id)
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    page = select(Adapter).join(ids, Adapter.id == ids.c.id).order_by(ordered, Adapter.id)
    return session.scalars(page).all(), total


def count_adapters(session: Session, filters: AdapterFilters) -> int:
    """How many adapters match; the common single-filter cases read one small index."""
    only = {name for name, value in vars(filters).items() if value not in (None, [], "")}
    words = search_words(filters.q or "")
    if only == {"tags_any"}:
        tags = [normalise_tag(t) for t in filters.tags_any]
        counted = select(func.count(func.distinct(AdapterTag.adapter_id))).where(
            AdapterTag.tag.in_(tags)
        )
    elif only == {"q"} and words and session.get_bind().dialect.name == "sqlite":
        fts_count = text("SELECT count(*) FROM adapter_fts WHERE adapter_fts MATCH :match")
        return int(session.scalar(fts_count, {"match": _fts_phrases(words)}) or 0)
    else:
        conditions = _conditions(session, filters, for_count=True)
        counted = select(func.count()).select_from(Adapter)
        if conditions:
            counted = counted.where(*conditions)
    return int(session.scalar(counted) or 0)


def get_adapter(session: Session, adapter_id: str) -> Adapter | None:
    return session.get(Adapter, adapter_id)


def get_adapters(session: Session, adapter_ids: Iterable[str]) -> list[Adapter]:
    ids = list(dict.fromkeys(adapter_ids))
    if not ids:
        return []
    return list(session.scalars(select(Adapter).where(Adapter.id.in_(ids))).all())


def adapter_by_real_path(session: Session, real_path: str) -> Adapter | None:
    return session.scalar(select(Adapter).where(Adapter.real_path == real_path))


def _in_prompt_order(query: Select[Any]) -> Select[Any]:
    """Active adapters only, in prompt order: ordinal, then name."""
    return query.where(Adapter.active == True).order_by(  # noqa: E712 (SQL, not Python)
        Adapter.ordinal.nulls_last(), func.lower(Adapter.name), Adapter.id
    )


def active_adapters(session: Session) -> list[Adapter]:
    """The active adapters in prompt order: ordinal, then name."""
    return list(session.scalars(_in_prompt_order(select(Adapter))).all())


def active_adapter_ids(session: Session) -> list[str]:
    """The ids of active_adapters(), without loading the rows."""
    return list(session.scalars(_in_prompt_order(select(Adapter.id))).all())


def next_ordinal(session: Session) -> int:
    current = session.scalar(select(func.max(Adapter.ordinal)).where(Adapter.active.is_(True)))
    return int(current or 0) + 1


def tag_counts(session: Session, limit: int) -> list[tuple[str, int]]:
    count = func.count().label("count")
    rows = session.execute(
        select(AdapterTag.tag, count)
        .group_by(AdapterTag.tag)
        .order_by(desc(count), AdapterTag.tag)
        .limit(limit)
    )
    return [(tag, int(n)) for tag, n in rows]


def base_model_counts(session: Session) -> list[tuple[str, int]]:
    count = func.count().label("count")
    rows = session.execute(
        select(Adapter.base_model, count)
        .where(Adapter.base_model.is_not(None))
        .group_by(Adapter.base_model)
        .order_by(desc(count), Adapter.base_model)
    )
    return [(str(name), int(n)) for name, n in rows]


def duplicate_groups(session: Session) -> list[tuple[str, list[Adapter]]]:
    """Adapters sharing a SHA-256, grouped by it."""
    shared = (
        select(Adapter.sha256)
        .where(Adapter.sha256.is_not(None))
        .group_by(Adapter.sha256)
        .having(func.count() > 1)
    )
    adapters = session.scalars(
        select(Adapter).where(Adapter.sha256.in_(shared)).order_by(Adapter.sha256, Adapter.id)
    ).all()
    groups: dict[str, list[Adapter]] = {}
    for adapter in adapters:
        groups.setdefault(adapter.sha256 or "", []).append(adapter)
    return list(groups.items())


def wanted_tags(tags: Iterable[Any] | None, user_tags: Iterable[Any] | None) -> dict[str, bool]:
    """The adaptertag rows of an adapter: normalised tag → is_user (a user tag wins the flag)."""
    wanted: dict[str, bool] = {}
    for tag in tags or []:
        if normalise_tag(str(tag)):
            wanted.setdefault(normalise_tag(str(tag)), False)
    for tag in user_tags or []:
        if normalise_tag(str(tag)):
            wanted[normalise_tag(str(tag))] = True
    return wanted


def replace_tags(session: Session, adapter: Adapter, *, new: bool = False) -> None:
    """Make adaptertag hold the adapter's metadata tags and user tags (user wins the flag).
    A `new` adapter has no rows to remove."""
    wanted = wanted_tags(adapter.tags, adapter.user_tags)
    if not new:
        session.execute(delete(AdapterTag).where(AdapterTag.adapter_id == adapter.id))
    if wanted:
        session.execute(
            insert(AdapterTag),
            [
                {"adapter_id": adapter.id, "tag": tag, "is_user": user}
                for tag, user in wanted.items()
            ],
        )


def refresh_search(session: Session, adapters: Sequence[Adapter]) -> None:
    """Recompute search_text of `adapters` and index it."""
    for adapter in adapters:
        adapter.search_text = build_search_text(adapter)
    index_search(session, adapters)


def index_search(
    session: Session, adapters: Sequence[Adapter], *, new_ids: frozenset[str] = frozenset()
) -> None:
    """Put the adapters' current search_text into the SQLite FTS5 table (flushed first);
    `new_ids` were just created and have no rows to remove. PostgreSQL's GIN index follows
    search_text by itself."""
    if not adapters:
        return
    session.flush()
    if session.get_bind().dialect.name != "sqlite":
        return
    forget_search(session, [adapter.id for adapter in adapters if adapter.id not in new_ids])
    session.execute(
        text("INSERT INTO adapter_fts (adapter_id, body) VALUES (:id, :body)"),
        [{"id": adapter.id, "body": adapter.search_text or ""} for adapter in adapters],
    )


def forget_search(session: Session, adapter_ids: Sequence[str]) -> None:
    """Remove FTS rows, found through the adapter_id column's own full-text index."""
    if not adapter_ids or session.get_bind().dialect.name != "sqlite":
        return
    for start in range(0, len(adapter_ids), 200):
        chunk = list(adapter_ids[start : start + 200])
        session.execute(
            text(
                "DELETE FROM adapter_fts WHERE adapter_fts MATCH :match AND adapter_id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"match": _fts_ids(chunk), "ids": chunk},
        )


def name_versions(session: Session) -> dict[tuple[str, str], str]:
    """(name, version) → adapter id, for every adapter with a version."""
    rows = session.execute(
        select(Adapter.name, Adapter.version, Adapter.id).where(Adapter.version.is_not(None))
    )
    return {(name, str(version)): adapter_id for name, version, adapter_id in rows}


def delete_adapters(session: Session, adapter_ids: Sequence[str]) -> int:
    if not adapter_ids:
        return 0
    forget_search(session, adapter_ids)
    result = session.execute(delete(Adapter).where(Adapter.id.in_(list(adapter_ids))))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def ingest_state(session: Session) -> list[Any]:
    """What a rescan compares against: one light row per adapter with a file path."""
    return list(
        session.execute(
            select(
                Adapter.id,
                Adapter.real_path,
                Adapter.file_path,
                Adapter.sha256,
                Adapter.file_size,
                Adapter.file_mtime_ns,
                Adapter.sidecar_state,
                Adapter.ingest_status,
            )
        ).all()
    )


def mark_missing(session: Session, adapter_ids: Sequence[str], *, now: Any) -> int:
    if not adapter_ids:
        return 0
    total = 0
    for start in range(0, len(adapter_ids), 500):
        chunk = list(adapter_ids[start : start + 500])
        result = session.execute(
            update(Adapter)
            .where(Adapter.id.in_(chunk), Adapter.ingest_status != "missing")
            .values(ingest_status="missing", missing_since=now, updated_at=now)
        )
        total += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return total
