"""The catalog's rules: what users may change, and how; no HTTP and no SQL here.

The functions that take an adapter id and change data are units of work: each commits.
The helpers that take a loaded adapter (set_rating, activate, ...) only change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from lora_manager.catalog import repository
from lora_manager.catalog.repository import AdapterFilters as AdapterFilters
from lora_manager.catalog.repository import normalise_tag
from lora_manager.catalog.schemas import (
    ActivateIn,
    AdapterPatch,
    BulkAction,
    BulkIn,
    BulkOut,
)
from lora_manager.core.errors import ForbiddenError, InvalidInputError, NotFoundError
from lora_manager.core.models import Adapter, utcnow
from lora_manager.core.paths import inside


def page(
    session: Session,
    filters: AdapterFilters,
    *,
    sort: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[Sequence[Adapter], int]:
    return repository.list_adapters(
        session, filters, sort=sort, descending=descending, limit=limit, offset=offset
    )


def require(session: Session, adapter_id: str) -> Adapter:
    adapter = repository.get_adapter(session, adapter_id)
    if adapter is None:
        raise NotFoundError(f"adapter {adapter_id} not found")
    return adapter


def tag_counts(session: Session, limit: int) -> list[tuple[str, int]]:
    return repository.tag_counts(session, limit)


def base_model_counts(session: Session) -> list[tuple[str, int]]:
    return repository.base_model_counts(session)


def duplicate_groups(session: Session) -> list[tuple[str, list[Adapter]]]:
    return repository.duplicate_groups(session)


def _clean_tags(tags: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(t for t in (normalise_tag(tag) for tag in tags) if t))


def set_rating(adapter: Adapter, rating: int | None) -> None:
    if adapter.rating != rating:
        adapter.rating = rating
        adapter.rating_updated_at = utcnow()


def set_favorite(adapter: Adapter, favorite: bool) -> None:
    if adapter.is_favorite != favorite:
        adapter.is_favorite = favorite
        adapter.favorite_updated_at = utcnow()


def set_user_tags(session: Session, adapter: Adapter, tags: Sequence[str]) -> None:
    adapter.user_tags = _clean_tags(tags)
    repository.replace_tags(session, adapter)
    repository.refresh_search(session, [adapter])


def activate(session: Session, adapter: Adapter, request: ActivateIn) -> None:
    if request.weight is not None:
        adapter.weight = request.weight
    if request.ordinal is not None:
        adapter.ordinal = request.ordinal
    elif not adapter.active or adapter.ordinal is None:
        adapter.ordinal = repository.next_ordinal(session)
    adapter.active = True


def deactivate(adapter: Adapter) -> None:
    adapter.active = False
    adapter.ordinal = None


def _patch(session: Session, adapter: Adapter, changes: AdapterPatch) -> None:
    """Apply the user-owned fields present in the request (explicit nulls clear)."""
    given = changes.model_fields_set
    if "rating" in given:
        set_rating(adapter, changes.rating)
    if "is_favorite" in given and changes.is_favorite is not None:
        set_favorite(adapter, changes.is_favorite)
    if "notes" in given:
        adapter.notes = changes.notes
    if "weight" in given:
        if changes.weight is None:
            raise InvalidInputError("weight cannot be null")
        adapter.weight = changes.weight
    if "active" in given and changes.active is not None:
        if changes.active:
            activate(session, adapter, ActivateIn(ordinal=changes.ordinal))
        else:
            deactivate(adapter)
    elif "ordinal" in given:
        adapter.ordinal = changes.ordinal
    if "user_tags" in given:
        set_user_tags(session, adapter, changes.user_tags or [])


def update_adapter(session: Session, adapter_id: str, changes: AdapterPatch) -> Adapter:
    adapter = require(session, adapter_id)
    _patch(session, adapter, changes)
    session.commit()
    return adapter


def activate_adapter(session: Session, adapter_id: str, request: ActivateIn) -> Adapter:
    adapter = require(session, adapter_id)
    activate(session, adapter, request)
    session.commit()
    return adapter


def deactivate_adapter(session: Session, adapter_id: str) -> Adapter:
    adapter = require(session, adapter_id)
    deactivate(adapter)
    session.commit()
    return adapter


def rate_adapter(session: Session, adapter_id: str, rating: int | None) -> Adapter:
    adapter = require(session, adapter_id)
    set_rating(adapter, rating)
    session.commit()
    return adapter


def favorite_adapter(session: Session, adapter_id: str, favorite: bool) -> Adapter:
    adapter = require(session, adapter_id)
    set_favorite(adapter, favorite)
    session.commit()
    return adapter


def bulk(session: Session, request: BulkIn) -> BulkOut:
    """Apply one action to many adapters, in one transaction."""
    adapters = repository.get_adapters(session, request.ids)
    found = {adapter.id for adapter in adapters}
    not_found = [adapter_id for adapter_id in request.ids if adapter_id not in found]
    if request.action in (BulkAction.tag, BulkAction.untag) and not _clean_tags(request.tags):
        raise InvalidInputError("tag and untag need at least one tag in `tags`")
    changed = 0
    if request.action is BulkAction.delete:
        changed = repository.delete_adapters(session, [a.id for a in adapters])
        session.commit()
        return BulkOut(
            action=request.action, matched=len(adapters), changed=changed, not_found=not_found
        )
    for adapter in sorted(adapters, key=lambda a: request.ids.index(a.id)):
        before = (adapter.active, adapter.is_favorite, tuple(adapter.user_tags or []))
        if request.action is BulkAction.activate:
            activate(session, adapter, ActivateIn())
        elif request.action is BulkAction.deactivate:
            deactivate(adapter)
        elif request.action in (BulkAction.favorite, BulkAction.unfavorite):
            set_favorite(adapter, request.action is BulkAction.favorite)
        else:
            current = adapter.user_tags or []
            tags = _clean_tags(request.tags)
            wanted = (
                [*current, *tags]
                if request.action is BulkAction.tag
                else [t for t in current if t not in tags]
            )
            set_user_tags(session, adapter, wanted)
        session.flush()
        if before != (adapter.active, adapter.is_favorite, tuple(adapter.user_tags or [])):
            changed += 1
    session.commit()
    return BulkOut(
        action=request.action, matched=len(adapters), changed=changed, not_found=not_found
    )


def delete_adapter(session: Session, adapter_id: str) -> None:
    """Forget the adapter (its file stays on disk)."""
    repository.delete_adapters(session, [require(session, adapter_id).id])
    session.commit()


def preview_file(session: Session, adapter_id: str, roots: Sequence[Path]) -> Path:
    """The adapter's preview image, only from inside the library roots."""
    adapter = require(session, adapter_id)
    if adapter.preview_path is None:
        raise NotFoundError(f"adapter {adapter.id} has no preview")
    path = Path(adapter.preview_path)
    if not inside(path, roots):
        raise ForbiddenError("the preview lies outside the library roots")
    if not path.is_file():
        raise NotFoundError(f"the preview of adapter {adapter.id} is gone from disk")
    return path
