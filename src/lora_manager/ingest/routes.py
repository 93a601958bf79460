"""Import routes: start an import in the background, follow its progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy.orm import Session

from lora_manager.catalog.schemas import AdapterDetail, RegisterIn
from lora_manager.core.dependencies import db_session
from lora_manager.core.errors import NotFoundError
from lora_manager.core.responses import DATABASE_UNAVAILABLE, UNAUTHORIZED, Responses
from lora_manager.ingest import runs
from lora_manager.ingest.schemas import ImportIn, ImportOut
from lora_manager.ingest.service import register_file

router = APIRouter(prefix="/imports", tags=["imports"])
# Registering one file is an import too; its route sits with the adapters' in the document.
adapters_router = APIRouter(prefix="/adapters", tags=["adapters"])
Db = Annotated[Session, Depends(db_session)]
ERRORS: Responses = {**UNAUTHORIZED, **DATABASE_UNAVAILABLE}


@router.post(
    "",
    response_model=ImportOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **ERRORS,
        403: {"description": "A path outside the library roots"},
        409: {"description": "No library roots configured"},
        422: {"description": "A path that is not a folder"},
    },
    summary="Start an import of the library roots (or some folders under them)",
)
def start(request: Request, body: ImportIn, session: Db) -> ImportOut:
    settings = request.app.state.settings
    roots = runs.choose_roots(settings, body.paths)
    run = runs.start_import(
        session, request.app.state.session_factory, settings, roots, body.dry_run
    )
    return ImportOut.model_validate(run)


@router.get("", response_model=list[ImportOut], responses=ERRORS, summary="Recent imports")
def recent(session: Db, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[ImportOut]:
    return [ImportOut.model_validate(run) for run in runs.recent_runs(session, limit)]


@router.get(
    "/{import_id}",
    response_model=ImportOut,
    responses={**ERRORS, 404: {"description": "No import with this id"}},
    summary="An import's progress, and its summary once finished",
)
def get(import_id: str, session: Db) -> ImportOut:
    run = runs.get_run(session, import_id)
    if run is None:
        raise NotFoundError(f"import {import_id} not found")
    return ImportOut.model_validate(run)


@adapters_router.post(
    "",
    response_model=AdapterDetail,
    status_code=status.HTTP_201_CREATED,
    responses={
        **ERRORS,
        422: {"description": "Invalid parameters, or a file that cannot be read"},
        403: {"description": "Path outside the library roots"},
        404: {"description": "No such file"},
        409: {"description": "No library roots configured, or an import is under way"},
    },
    summary="Register one model file from inside a library root",
)
def register(request: Request, body: RegisterIn, session: Db) -> AdapterDetail:
    adapter = register_file(session, request.app.state.settings, body.path)
    return AdapterDetail.model_validate(adapter)
