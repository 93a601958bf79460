"""Error responses the routes document in OpenAPI; plain dicts, so no FastAPI import."""

from __future__ import annotations

from typing import Any

Responses = dict[int | str, dict[str, Any]]

UNAUTHORIZED: Responses = {401: {"description": "Missing or wrong X-API-Key"}}
INVALID: Responses = {422: {"description": "Invalid parameters"}}
DATABASE_UNAVAILABLE: Responses = {
    503: {"description": "Database unreachable, busy or refusing writes, or schema not at head"},
}
# What any route behind the API key and the schema gate may answer.
ERRORS: Responses = {**UNAUTHORIZED, **INVALID, **DATABASE_UNAVAILABLE}
