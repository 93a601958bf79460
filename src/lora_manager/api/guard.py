"""The first thing a request meets: the API key, the body's size and the URL's text.

FastAPI parses a body before any dependency runs, so without this a client without the key
could make the process read (and hold) as large a body as it liked. This pure ASGI
middleware, outside FastAPI:

1. answers 401 on a protected route (`/v1/…`) whose X-API-Key is missing or wrong, before
   one byte of the body is read (the key is compared in constant time);
2. answers 413 when Content-Length says the body is larger than MAX_REQUEST_BYTES, without
   reading it, and when a body sent without a length (chunked) grows past the limit, as soon
   as it does;
3. answers 422 when the path or the query string holds NUL or is not valid UTF-8 once
   percent-decoded (no route could store or match such text);

and hands the app the body it read. The X-API-Key dependency stays on the routes, so the
OpenAPI document still describes the security scheme.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lora_manager.api.auth import key_matches

PROTECTED_PREFIX = "/v1/"
# What the guard adds to a protected route's answers, for the OpenAPI document (its 401 and
# 422 are the routes' own).
GUARDED: dict[int | str, dict[str, Any]] = {
    413: {"description": "Body larger than MAX_REQUEST_BYTES"},
}


class RequestGuard:
    def __init__(self, app: ASGIApp, *, api_key: SecretStr | None, max_body: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not self._authorised(scope, headers.get(b"x-api-key")):
            await _answer(
                send,
                401,
                {"detail": "invalid or missing API key (X-API-Key header)"},
                [(b"www-authenticate", b"APIKey")],
            )
            return
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(send)
            return
        problem = _url_problem(scope)
        if problem is not None:
            where, message = problem
            detail = [{"type": "string_invalid", "loc": [where], "msg": message, "input": ""}]
            await _answer(send, 422, {"detail": detail})
            return
        body: list[bytes] = []
        size = 0
        while True:
            received = await receive()
            if received["type"] != "http.request":  # the client went away
                return
            chunk = received.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(send)
                return
            body.append(chunk)
            if not received.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(body), receive), send)

    def _authorised(self, scope: Scope, provided: bytes | None) -> bool:
        if self.api_key is None or not _protected(scope):
            return True
        return key_matches(self.api_key, provided)

    async def _too_large(self, send: Send) -> None:
        detail = f"request body larger than {self.max_body} bytes (MAX_REQUEST_BYTES)"
        await _answer(send, 413, {"detail": detail}, [(b"connection", b"close")])


def _protected(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return path.startswith(PROTECTED_PREFIX) or path == PROTECTED_PREFIX.rstrip("/")


def _url_problem(scope: Scope) -> tuple[str, str] | None:
    raw_path = scope.get("raw_path")
    if raw_path:
        path = unquote_to_bytes(raw_path)
    else:  # lone surrogates kept as such, so the strict decode below refuses them
        path = scope.get("path", "").encode("utf-8", "surrogatepass")
    query = unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" "))
    for where, text in (("path", path), ("query", query)):
        if b"\x00" in text:
            return where, "NUL characters (%00) are not allowed"
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return where, "not valid UTF-8 once percent-decoded"
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(
    send: Send, status: int, content: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(content, ensure_ascii=False, allow_nan=False).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
