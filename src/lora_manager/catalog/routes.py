"""Catalog routes: parse, call the repository, shape the answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from lora_manager.api.dependencies import db_session
from lora_manager.api.errors import NotFoundError
from lora_manager.catalog import repository
from lora_manager.catalog.schemas import AdapterOut, AdapterPage

router = APIRouter(tags=["adapters"])

ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or wrong X-API-Key"},
    503: {"description": "Database unreachable or schema not at head"},
}


@router.get("/adapters", response_model=AdapterPage, responses=ERRORS)
def list_adapters(
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    session: Session = Depends(db_session),
) -> AdapterPage:
    """Adapters by name, a page at a time, with the total count."""
    items = repository.list_adapters(session, limit=limit, offset=offset)
    return AdapterPage(
        total=repository.count_adapters(session),
        limit=limit,
        offset=offset,
        items=[AdapterOut.model_validate(item) for item in items],
    )


@router.get(
    "/adapters/{adapter_id}",
    response_model=AdapterOut,
    responses={**ERRORS, 404: {"description": "No adapter with this id"}},
)
def get_adapter(adapter_id: str, session: Session = Depends(db_session)) -> AdapterOut:
    adapter = repository.get_adapter(session, adapter_id)
    if adapter is None:
        raise NotFoundError(f"adapter {adapter_id} not found")
    return AdapterOut.model_validate(adapter)
