"""The webhook back end: POST the request as JSON to an allow-listed URL, never following
redirects."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import httpx

from lora_manager.core.config import Settings
from lora_manager.core.errors import InvalidInputError
from lora_manager.deliveries.backends.base import (
    DEFAULT_PORTS,
    DeliveryContext,
    DeliveryError,
    DeliveryRequest,
    DeliveryResult,
    read_bounded,
    safe_url,
    status_error,
    transport_error,
)

HTTP_BODY_EXCERPT = 2_000


def _origin_and_path(url: httpx.URL) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, raw path) of a URL safe to compare, or None when it is not."""
    scheme = url.scheme.lower()
    if scheme not in DEFAULT_PORTS or not url.host or url.userinfo:
        return None
    raw_path = url.raw_path.decode("ascii").split("?", 1)[0] or "/"
    decoded = unquote(raw_path)
    if "\\" in decoded or any(part in (".", "..") for part in decoded.split("/")):
        return None
    port = url.port or DEFAULT_PORTS[scheme]
    return scheme, url.host.lower(), port, raw_path


def url_allowed(url: str, allowlist: list[str]) -> bool:
    """True when `url` lies under an allow-list prefix: same origin and a path boundary."""
    try:
        target = _origin_and_path(httpx.URL(url))
    except (httpx.InvalidURL, UnicodeError):
        return False
    if target is None:
        return False
    for entry in allowlist:
        try:
            parsed = httpx.URL(entry.strip())
            allowed = _origin_and_path(parsed)
        except (httpx.InvalidURL, UnicodeError):
            continue
        if allowed is None or parsed.query or parsed.fragment:
            continue  # a malformed entry allows nothing
        if allowed[:3] != target[:3]:
            continue
        prefix, path = allowed[3], target[3]
        if prefix.endswith("/"):
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return True
        elif path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def deliver_http(
    settings: Settings,
    request: DeliveryRequest,
    *,
    url: str,
    client: httpx.Client | None = None,
) -> DeliveryResult:
    """POST the request as JSON to an allow-listed webhook; 2xx is success.

    `client` (a worker's shared one) must not follow redirects; default: a new client."""
    if not url_allowed(url, settings.delivery_http_allowlist):
        raise DeliveryError("URL not in DELIVERY_HTTP_ALLOWLIST", transient=False)
    target = httpx.URL(url)
    payload = {
        "job_id": request.job_id,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "adapters": request.adapters,
        "params": request.params,
    }
    shown = safe_url(target)
    try:
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(
                    httpx.Client(
                        timeout=settings.delivery_http_timeout,
                        follow_redirects=False,
                        trust_env=False,
                    )
                )
            response = stack.enter_context(
                client.stream("POST", target, json=payload, follow_redirects=False)
            )
            body, cut = read_bounded(response, HTTP_BODY_EXCERPT)
    except httpx.HTTPError as exc:
        raise transport_error(f"webhook {shown}", exc) from None
    if not 200 <= response.status_code < 300:
        raise status_error(f"webhook {shown}", response.status_code, body)
    return DeliveryResult(
        summary={
            "backend": "http",
            "url": shown,
            "status_code": response.status_code,
            "body": body,
            "body_truncated": cut,
        }
    )


class HttpBackend:
    """params: {url, data}; `data` is what the webhook gets as the request's params."""

    mode = "http"

    def check_params(self, settings: Settings, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - {"url", "data"})
        if unknown:
            raise InvalidInputError(
                f"unknown http params: {', '.join(unknown)} (allowed: url, data)"
            )
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidInputError("http mode needs params.url")
        if not url_allowed(url, settings.delivery_http_allowlist):
            raise InvalidInputError("params.url is not under any DELIVERY_HTTP_ALLOWLIST entry")
        if not isinstance(params.get("data", {}), dict):
            raise InvalidInputError("params.data must be a JSON object")
        return params

    def deliver(
        self, settings: Settings, request: DeliveryRequest, context: DeliveryContext
    ) -> DeliveryResult:
        url = request.params.get("url", "")
        data = request.params.get("data") or {}
        return deliver_http(settings, replace(request, params=data), url=url, client=context.http)
