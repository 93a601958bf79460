"""Catalog routes: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import status as http_status
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from lora_manager.catalog import service
from lora_manager.catalog.schemas import (
    ActivateIn,
    AdapterDetail,
    AdapterOut,
    AdapterPage,
    AdapterPatch,
    BaseModelCount,
    BulkIn,
    BulkOut,
    DuplicateGroup,
    FavoriteIn,
    RatingIn,
    SortKey,
    TagCount,
)
from lora_manager.catalog.service import AdapterFilters
from lora_manager.core.dependencies import db_session
from lora_manager.core.responses import ERRORS, Responses

router = APIRouter(prefix="/adapters", tags=["adapters"])

Db = Annotated[Session, Depends(db_session)]
NOT_FOUND: Responses = {
    **ERRORS,
    404: {
        "description": "No adapter with this id",
        "content": {"application/json": {"example": {"detail": "adapter 0b6e… not found"}}},
    },
}


@router.get("", response_model=AdapterPage, responses=ERRORS, summary="Search and list adapters")
def list_adapters(
    session: Db,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Words matched by prefix in name, description, tags, triggers and author",
            examples=["ink wash"],
        ),
    ] = None,
    tag: Annotated[list[str], Query(description="Has any of these tags")] = [],  # noqa: B006
    tag_all: Annotated[list[str], Query(description="Has all of these tags")] = [],  # noqa: B006
    base_model: Annotated[list[str], Query(examples=["SDXL 1.0"])] = [],  # noqa: B006
    active: bool | None = None,
    favorite: bool | None = None,
    rating_min: Annotated[int | None, Query(ge=1, le=5)] = None,
    nsfw_max: Annotated[int | None, Query(ge=0, le=64)] = None,
    missing: Annotated[
        bool | None, Query(description="Only adapters whose file is gone (true) or present (false)")
    ] = None,
    has_preview: bool | None = None,
    status: Annotated[
        str | None, Query(pattern="^(ok|error|missing)$", description="Ingestion status")
    ] = None,
    sort: SortKey = SortKey.name,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AdapterPage:
    filters = AdapterFilters(
        q=q,
        tags_any=tag,
        tags_all=tag_all,
        base_model=base_model,
        active=active,
        favorite=favorite,
        rating_min=rating_min,
        nsfw_max=nsfw_max,
        missing=missing,
        has_preview=has_preview,
        ingest_status=status,
    )
    items, total = service.page(
        session,
        filters,
        sort=sort.value,
        descending=order == "desc",
        limit=limit,
        offset=offset,
    )
    return AdapterPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[AdapterOut.model_validate(item) for item in items],
    )


@router.get(
    "/tags",
    response_model=list[TagCount],
    responses=ERRORS,
    summary="Tags with the number of adapters carrying each",
)
def tags(session: Db, limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> list[TagCount]:
    return [TagCount(tag=t, count=n) for t, n in service.tag_counts(session, limit)]


@router.get("/base-models", response_model=list[BaseModelCount], responses=ERRORS)
def base_models(session: Db) -> list[BaseModelCount]:
    return [BaseModelCount(base_model=b, count=n) for b, n in service.base_model_counts(session)]


@router.get(
    "/duplicates",
    response_model=list[DuplicateGroup],
    responses=ERRORS,
    summary="Adapters whose files have the same SHA-256",
)
def duplicates(session: Db) -> list[DuplicateGroup]:
    return [
        DuplicateGroup(sha256=digest, adapters=[AdapterOut.model_validate(a) for a in group])
        for digest, group in service.duplicate_groups(session)
    ]


@router.post(
    "/bulk",
    response_model=BulkOut,
    responses=ERRORS,
    summary="Activate, deactivate, favourite, tag or delete many adapters",
)
def bulk(body: BulkIn, session: Db) -> BulkOut:
    return service.bulk(session, body)


@router.get("/{adapter_id}", response_model=AdapterDetail, responses=NOT_FOUND)
def get_adapter(adapter_id: str, session: Db) -> AdapterDetail:
    return AdapterDetail.model_validate(service.require(session, adapter_id))


@router.patch(
    "/{adapter_id}",
    response_model=AdapterDetail,
    responses=NOT_FOUND,
    summary="Change the fields a user owns",
)
def patch_adapter(adapter_id: str, body: AdapterPatch, session: Db) -> AdapterDetail:
    adapter = service.update_adapter(session, adapter_id, body)
    return AdapterDetail.model_validate(adapter)


@router.delete(
    "/{adapter_id}",
    status_code=http_status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
    summary="Forget an adapter (its file stays on disk)",
)
def delete_adapter(adapter_id: str, session: Db) -> None:
    service.delete_adapter(session, adapter_id)


@router.post("/{adapter_id}/activate", response_model=AdapterOut, responses=NOT_FOUND)
def activate(adapter_id: str, session: Db, body: ActivateIn | None = None) -> AdapterOut:
    adapter = service.activate_adapter(session, adapter_id, body or ActivateIn())
    return AdapterOut.model_validate(adapter)


@router.post("/{adapter_id}/deactivate", response_model=AdapterOut, responses=NOT_FOUND)
def deactivate(adapter_id: str, session: Db) -> AdapterOut:
    adapter = service.deactivate_adapter(session, adapter_id)
    return AdapterOut.model_validate(adapter)


@router.put("/{adapter_id}/rating", response_model=AdapterOut, responses=NOT_FOUND)
def put_rating(adapter_id: str, body: RatingIn, session: Db) -> AdapterOut:
    adapter = service.rate_adapter(session, adapter_id, body.rating)
    return AdapterOut.model_validate(adapter)


@router.put("/{adapter_id}/favorite", response_model=AdapterOut, responses=NOT_FOUND)
def put_favorite(adapter_id: str, body: FavoriteIn, session: Db) -> AdapterOut:
    adapter = service.favorite_adapter(session, adapter_id, body.favorite)
    return AdapterOut.model_validate(adapter)


@router.get(
    "/{adapter_id}/preview",
    response_class=FileResponse,
    responses={
        **NOT_FOUND,
        403: {"description": "Preview outside the library roots"},
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "video/mp4": {}}},
    },
)
def preview(adapter_id: str, request: Request, session: Db) -> FileResponse:
    path = service.preview_file(session, adapter_id, request.app.state.settings.resolved_roots)
    return FileResponse(path)
