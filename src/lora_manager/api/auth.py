"""The X-API-Key check, in constant time, on every route that reads or changes data."""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from lora_manager.core.errors import UnauthorizedError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


# Async: no I/O here, so it runs on the event loop instead of costing a thread hand-off.
async def require_api_key(
    request: Request, provided: str | None = Security(api_key_header)
) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if not key_matches(expected, provided.encode("latin-1") if provided is not None else None):
        raise UnauthorizedError("invalid or missing API key (X-API-Key header)")


def key_matches(expected: SecretStr, provided: bytes | None) -> bool:
    """Whether the X-API-Key header's bytes are the key, compared in constant time."""
    return hmac.compare_digest(provided or b"", expected.get_secret_value().encode())
