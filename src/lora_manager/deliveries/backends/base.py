"""What every delivery back end is, and what they share.

A back end (see `Backend`) has a mode name, checks a job's parameters before the job is
queued, and delivers a `DeliveryRequest`, returning a `DeliveryResult` (its `summary` is
what the job stores) or raising `DeliveryError`, whose `transient` flag tells the job worker
whether a retry may help. Rules shared by all of them:

* error messages never carry secrets: no passwords, no Authorization headers, no URL
  credentials or query strings;
* whatever comes back from the other side is kept only as a bounded excerpt;
* webhooks go only to URLs under an entry of DELIVERY_HTTP_ALLOWLIST and never follow
  redirects; the local command runs from an argument list, never through a shell;
* SDNext images are checked by their magic bytes and saved under generated names only.

`lora_manager.deliveries.backends.BACKENDS` maps each mode to its back end: a new back end
is one module here and one line there (plus its settings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from lora_manager.core.config import Settings
from lora_manager.core.errors import LoraManagerError

ERROR_EXCERPT = 500
PROGRESS_INTERVAL = 0.5

DEFAULT_PORTS = {"http": 80, "https": 443}


class DeliveryError(LoraManagerError):
    """A delivery failed; `transient` says a retry may succeed (network, timeout, 5xx, 429).

    `status_code` is the HTTP status the other side answered, 502 (a back end failed) when
    it answered none; `detail` is what the job keeps of the attempt (a command's exit code
    and output). A delivery error ends a job in the worker, never an API request."""

    status_code = 502

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        status_code: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        if status_code is not None:
            self.status_code = status_code
        self._detail = detail or {}

    @property
    def detail(self) -> dict[str, Any]:  # type: ignore[override]
        return self._detail


@dataclass
class DeliveryRequest:
    job_id: str
    prompt: str
    negative_prompt: str | None
    adapters: list[dict[str, Any]]
    params: dict[str, Any]


@dataclass
class DeliveryResult:
    summary: dict[str, Any]
    images: list[str] = field(default_factory=list)


def _never() -> bool:
    return False


def _ignore(_value: float) -> None:
    pass


@dataclass
class DeliveryContext:
    """What the worker gives a running delivery: `cancel()` turns true when the job is to
    stop (asked to cancel, or its lease lost), `on_progress` records a 0 to 1 progress, and
    `http` is the process's shared client (it never follows redirects); None: make one."""

    cancel: Callable[[], bool] = _never
    on_progress: Callable[[float], None] = _ignore
    http: httpx.Client | None = None


class Backend(Protocol):
    """A generation back end, registered under its `mode` in `backends.BACKENDS`.

    Cancelling is cooperative: a running `deliver` polls `context.cancel` (at least every
    PROGRESS_INTERVAL) and, once it is true, stops its work on the other side and raises
    `DeliveryError("cancelled")`."""

    mode: str

    def check_params(self, settings: Settings, params: dict[str, Any]) -> dict[str, Any]:
        """The job's parameters as stored, checked before the job is queued so a job that
        cannot run never is; raises core.errors.InvalidInputError."""
        ...

    def deliver(
        self, settings: Settings, request: DeliveryRequest, context: DeliveryContext
    ) -> DeliveryResult:
        """Deliver the request (its `params` as `check_params` accepted them)."""
        ...


# --- shared helpers -------------------------------------------------------------------------


def status_error(what: str, status: int, body: str) -> DeliveryError:
    transient = status >= 500 or status == 429
    excerpt = body[:ERROR_EXCERPT]
    message = f"{what} answered HTTP {status}"
    if excerpt:
        message += f": {excerpt}"
    return DeliveryError(message, transient=transient, status_code=status)


def transport_error(what: str, exc: httpx.HTTPError) -> DeliveryError:
    if isinstance(exc, httpx.TimeoutException):
        return DeliveryError(f"{what} timed out ({type(exc).__name__})", transient=True)
    # httpx's transport messages name the OS error, never the request headers.
    return DeliveryError(f"{what} unreachable: {type(exc).__name__}: {exc}", transient=True)


def read_bounded(response: httpx.Response, limit_chars: int) -> tuple[str, bool]:
    """The first `limit_chars` characters of a streamed body, and whether it was cut."""
    limit_bytes = limit_chars * 4  # UTF-8 uses at most four bytes a character
    chunks: list[bytes] = []
    size = 0
    cut = False
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit_bytes:
            cut = True
            break
    text = b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
    if len(text) > limit_chars:
        text, cut = text[:limit_chars], True
    return text, cut


def safe_url(url: httpx.URL | str) -> str:
    """A URL fit for messages and summaries: no credentials, no query, no fragment."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
