"""One place that turns the project's errors into JSON responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from lora_manager.errors import DatabaseUnreachableError, LoraManagerError, SchemaNotAtHeadError

log = logging.getLogger(__name__)


class ApiError(LoraManagerError):
    """An error with an HTTP status, raised by services and routes."""

    status_code = 400

    def __init__(self, detail: str, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class NotFoundError(ApiError):
    status_code = 404


class UnauthorizedError(ApiError):
    status_code = 401


def _json(status: int, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "APIKey"} if exc.status_code == 401 else None
        response = _json(exc.status_code, exc.detail)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(SchemaNotAtHeadError)
    async def schema_behind(_: Request, exc: SchemaNotAtHeadError) -> JSONResponse:
        return _json(503, str(exc), reason="schema behind")

    @app.exception_handler(DatabaseUnreachableError)
    async def database_down(_: Request, exc: DatabaseUnreachableError) -> JSONResponse:
        return _json(503, "database unreachable", reason="database unreachable")

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # A SQL error may mean the schema moved under us (a downgrade): re-check before 500.
        gate = getattr(request.app.state, "schema_gate", None)
        if gate is not None:
            gate.invalidate()
            try:
                gate.ensure_at_head()
            except SchemaNotAtHeadError as behind:
                return _json(503, str(behind), reason="schema behind")
            except DatabaseUnreachableError:
                return _json(503, "database unreachable", reason="database unreachable")
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return _json(503, "database unreachable", reason="database unreachable")
        log.error("database error on %s %s: %s", request.method, request.url.path, exc)
        return _json(500, "internal database error")
