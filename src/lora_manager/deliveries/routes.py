"""Compose route: parse, pick the adapters, compose, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from lora_manager.api.dependencies import db_session
from lora_manager.api.errors import ApiError
from lora_manager.catalog import repository
from lora_manager.deliveries.compose import compose
from lora_manager.deliveries.schemas import ComposedAdapterOut, ComposeIn, ComposeOut, SkippedOut

router = APIRouter(tags=["compose"])
Db = Annotated[Session, Depends(db_session)]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong X-API-Key"},
    422: {"description": "Unknown adapter ids or invalid parameters"},
    503: {"description": "Database unreachable or schema not at head"},
}


@router.post(
    "/compose",
    response_model=ComposeOut,
    responses=ERRORS,
    summary="Build a prompt from the active adapters (or the ones given)",
)
def compose_prompt(body: ComposeIn, session: Db) -> ComposeOut:
    if body.adapter_ids is None:
        adapters = repository.active_adapters(session)
    else:
        found = {a.id: a for a in repository.get_adapters(session, body.adapter_ids)}
        unknown = [i for i in body.adapter_ids if i not in found]
        if unknown:
            raise ApiError(f"unknown adapter ids: {', '.join(unknown)}", 422)
        adapters = [found[i] for i in dict.fromkeys(body.adapter_ids)]
    result = compose(
        adapters,
        prefix=body.prefix,
        suffix=body.suffix,
        negative_prompt=body.negative_prompt,
        include_triggers=body.include_triggers,
        weights=body.weights,
    )
    return ComposeOut(
        prompt=result.prompt,
        negative_prompt=result.negative_prompt,
        adapters=[ComposedAdapterOut(**vars(a)) for a in result.adapters],
        triggers=result.triggers,
        skipped=[SkippedOut(**s) for s in result.skipped],
    )
