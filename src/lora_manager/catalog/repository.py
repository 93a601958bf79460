"""Queries over the adapter table; nothing else in the code knows them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lora_manager.models import Adapter


def count_adapters(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Adapter)) or 0)


def list_adapters(session: Session, *, limit: int, offset: int) -> Sequence[Adapter]:
    query = select(Adapter).order_by(Adapter.name, Adapter.id).limit(limit).offset(offset)
    return session.scalars(query).all()


def get_adapter(session: Session, adapter_id: str) -> Adapter | None:
    return session.get(Adapter, adapter_id)
