"""One place that turns the project's errors into JSON responses."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from lora_manager.core.db import short_error
from lora_manager.core.errors import (
    DatabaseUnreachableError,
    LoraManagerError,
    SchemaNotAtHeadError,
    UnauthorizedError,
    UnavailableError,
)

log = logging.getLogger(__name__)


def _json(status: int, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def _schema_behind(exc: SchemaNotAtHeadError) -> JSONResponse:
    return _json(503, str(exc), reason="schema behind")


def _unreachable() -> JSONResponse:
    return _json(503, "database unreachable", reason="database unreachable")


# What a 422 repeats of the input: a 10 MB prompt must not come back as a 10 MB error.
ECHO_CHARS = 100
MAX_ERRORS = 50


def _text(value: str) -> str:
    """At most ECHO_CHARS characters, lone surrogates written as escapes (valid UTF-8)."""
    clipped = value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…"
    return clipped.encode("utf-8", "backslashreplace").decode("utf-8")


def _echo(value: object) -> str | int | float | None:
    """A short, JSON-safe stand-in for an input or a context value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else _text(repr(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _text(value)
    return _text(repr(value))


def validation_details(errors: Sequence[Any]) -> list[dict[str, object]]:
    """Pydantic's errors, bounded (first MAX_ERRORS, inputs cut to ECHO_CHARS) and always
    valid JSON (no NaN, no lone surrogates, no exception objects in `ctx`)."""
    # Sequence[Any]: what RequestValidationError.errors() is declared to return.
    details: list[dict[str, object]] = []
    for error in errors[:MAX_ERRORS]:
        item: dict[str, object] = {
            "type": _text(str(error.get("type", "value_error"))),
            "loc": [p if isinstance(p, int) else _text(str(p)) for p in error.get("loc", ())],
            "msg": _text(str(error.get("msg", ""))),
        }
        if "input" in error:
            item["input"] = _echo(error["input"])
        ctx = error.get("ctx")
        if isinstance(ctx, Mapping):
            item["ctx"] = {_text(str(k)): _echo(v) for k, v in ctx.items()}
        details.append(item)
    return details


# SQLite's result codes (primary, low byte) and PostgreSQL's SQLSTATEs (or classes) that mean
# the database cannot do this now: the request was fine, the server is not.
DATABASE_BUSY = "database busy"
_SQLITE_REFUSED = {
    5: DATABASE_BUSY,
    6: DATABASE_BUSY,
    8: "database read-only",
    10: "disk I/O error",
    13: "disk full",
}
_PG_REFUSED = {
    "25006": "database read-only",
    "40001": DATABASE_BUSY,
    "40P01": DATABASE_BUSY,
    "55P03": DATABASE_BUSY,
    "57014": DATABASE_BUSY,
    "53100": "disk full",
    "53": "out of resources",
    "58030": "disk I/O error",
}
# Seconds a client is asked to wait before retrying a request the database was too busy for.
BUSY_RETRY_AFTER = 1


def database_refused(exc: SQLAlchemyError) -> str | None:
    """Why the database refused (busy or locked, read-only, disk full, …), or None for other
    errors."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _SQLITE_REFUSED.get(code & 0xFF)
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str):
        return _PG_REFUSED.get(state) or _PG_REFUSED.get(state[:2])
    return None


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _allowed(request: Request) -> list[str]:
    """The methods the OpenAPI document gives the path template matching the request (the
    most literal one: /v1/adapters/tags, not /v1/adapters/{adapter_id})."""
    table = getattr(request.app.state, "allow_table", None)
    if table is None:
        table = [
            (
                template.count("{"),
                compile_path(template)[0],
                {m.upper() for m in operations if m in _HTTP_METHODS},
            )
            for template, operations in request.app.openapi()["paths"].items()
        ]
        table.sort(key=lambda row: row[0])
        request.app.state.allow_table = table
    path = request.url.path
    for _, pattern, methods in table:
        if pattern.match(path):
            return sorted(methods)
    return []


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_details(exc.errors())})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's "error parsing the body": not UTF-8, or a number too long to parse.
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": _text(str(exc.__cause__))}]
            return JSONResponse(status_code=422, content={"detail": detail})
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; list them all.
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed(request))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(LoraManagerError)
    async def project_error(_: Request, exc: LoraManagerError) -> JSONResponse:
        # The error family carries its own status (core/errors.py).
        if isinstance(exc, SchemaNotAtHeadError):
            return _schema_behind(exc)
        if isinstance(exc, DatabaseUnreachableError):
            return _unreachable()
        if exc.status_code >= 500 and not isinstance(exc, UnavailableError):
            log.error("unexpected %s: %s", type(exc).__name__, exc)
            return _json(500, "internal error")
        response = _json(exc.status_code, exc.detail)
        if isinstance(exc, UnauthorizedError):
            response.headers["WWW-Authenticate"] = "APIKey"
        return response

    @app.exception_handler(StaleDataError)
    @app.exception_handler(ObjectDeletedError)
    async def deleted_meanwhile(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        # Another request deleted the row between this one reading and writing it.
        return _json(404, "not found: deleted by another request meanwhile")

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # A SQL error may mean the schema moved under us (a downgrade): re-check before 500.
        gate = getattr(request.app.state, "schema_gate", None)
        if gate is not None:
            gate.invalidate()
            try:
                gate.ensure_at_head()
            except SchemaNotAtHeadError as behind:
                return _schema_behind(behind)
            except DatabaseUnreachableError:
                return _unreachable()
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return _unreachable()
        refused = database_refused(exc)
        if refused is not None:
            log.error("database refused on %s: %s", request.url.path, short_error(exc))
            response = _json(503, f"{refused}: {_text(short_error(exc))}", reason=refused)
            if refused == DATABASE_BUSY:
                response.headers["Retry-After"] = str(BUSY_RETRY_AFTER)
            return response
        log.error("database error on %s %s: %s", request.method, request.url.path, exc)
        return _json(500, "internal database error")
