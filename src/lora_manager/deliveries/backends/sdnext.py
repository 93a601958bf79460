"""The SDNext back end: txt2img with progress reports; the images, checked by their magic
bytes, are saved under generated names in RESULTS_DIR."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import httpx

from lora_manager.core.config import Settings
from lora_manager.core.errors import InvalidInputError
from lora_manager.deliveries.backends.base import (
    DEFAULT_PORTS,
    ERROR_EXCERPT,
    PROGRESS_INTERVAL,
    DeliveryContext,
    DeliveryError,
    DeliveryRequest,
    DeliveryResult,
    status_error,
    transport_error,
)

SDNEXT_TEXT_EXCERPT = 4_000
_SAFE_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_BUILTIN_DEFAULTS: dict[str, Any] = {
    "steps": 20,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "seed": -1,
    "batch_size": 1,
    "n_iter": 1,
}
_TXT2IMG_KEYS = frozenset(
    ("steps", "sampler_name", "cfg_scale", "width", "height", "seed", "batch_size", "n_iter")
)
_IMAGE_KINDS = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"))


def _int_in(name: str, value: Any, low: int, high: int, *, multiple: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DeliveryError(f"{name} must be an integer", transient=False)
    if not low <= value <= high or value % multiple:
        extra = f", a multiple of {multiple}" if multiple > 1 else ""
        raise DeliveryError(f"{name} must be between {low} and {high}{extra}", transient=False)
    return value


def txt2img_parameters(settings: Settings, request: DeliveryRequest) -> dict[str, Any]:
    """The txt2img body: built-in defaults < SDNEXT_DEFAULTS < the request's params, checked."""
    merged = {**_BUILTIN_DEFAULTS, **settings.sdnext_defaults, **request.params}
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "steps": _int_in("steps", merged["steps"], 1, 150),
        "width": _int_in("width", merged["width"], 64, 4096, multiple=8),
        "height": _int_in("height", merged["height"], 64, 4096, multiple=8),
        "seed": _int_in("seed", merged["seed"], -1, 2**32 - 1),
        "batch_size": _int_in("batch_size", merged["batch_size"], 1, 8),
        "n_iter": _int_in("n_iter", merged["n_iter"], 1, 16),
    }
    cfg = merged["cfg_scale"]
    if isinstance(cfg, bool) or not isinstance(cfg, int | float) or not 1 <= cfg <= 30:
        raise DeliveryError("cfg_scale must be a number between 1 and 30", transient=False)
    body["cfg_scale"] = cfg
    sampler = merged.get("sampler_name")
    if sampler is not None:
        if not isinstance(sampler, str) or not sampler.strip() or len(sampler) > 100:
            raise DeliveryError("sampler_name must be a short non-empty text", transient=False)
        body["sampler_name"] = sampler
    return body


def _image_kind(data: bytes) -> str | None:
    for magic, ext in _IMAGE_KINDS:
        if data.startswith(magic):
            return ext
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _decode_images(raw: Any) -> list[tuple[bytes, str]]:
    if not isinstance(raw, list):
        raise DeliveryError("SDNext answer has no images list", transient=False)
    images: list[tuple[bytes, str]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise DeliveryError(f"SDNext image {index} is not base64 text", transient=False)
        text = item.split(",", 1)[1] if item.startswith("data:") else item
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise DeliveryError(
                f"SDNext image {index} is not valid base64", transient=False
            ) from None
        kind = _image_kind(data)
        if kind is None:
            raise DeliveryError(f"SDNext image {index} is not PNG, JPEG or WebP", transient=False)
        images.append((data, kind))
    return images


def _bounded_json(value: Any) -> Any:
    """`value` when its JSON is short, else the start of that JSON as text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value[:SDNEXT_TEXT_EXCERPT]
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value if len(text) <= SDNEXT_TEXT_EXCERPT else text[:SDNEXT_TEXT_EXCERPT]


def _check_job_id(job_id: str) -> None:
    if not _SAFE_JOB_ID.match(job_id) or job_id in (".", ".."):
        raise DeliveryError("job id is not a safe folder name", transient=False)


def _save_images(settings: Settings, job_id: str, images: list[tuple[bytes, str]]) -> list[str]:
    _check_job_id(job_id)
    folder = Path(settings.results_dir) / job_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
        names: list[str] = []
        for index, (data, ext) in enumerate(images):
            name = f"{index:02d}.{ext}"
            partial = folder / f".{name}.part"
            partial.write_bytes(data)
            partial.replace(folder / name)
            names.append(f"{job_id}/{name}")
    except OSError as exc:
        raise DeliveryError(
            f"could not save images: {type(exc).__name__}", transient=False
        ) from None
    return names


class _Scrubber:
    """Removes the SDNext password from any text that might end up in a message."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, error: DeliveryError) -> DeliveryError:
        message = error.message
        for secret in self.secrets:
            message = message.replace(secret, "***")
        if message == error.message:
            return error
        return DeliveryError(message, transient=error.transient, status_code=error.status_code)


def _sdnext_base(settings: Settings) -> httpx.URL:
    if not settings.sdnext_url:
        raise DeliveryError("SDNEXT_URL is not set", transient=False)
    try:
        base = httpx.URL(settings.sdnext_url.rstrip("/"))
    except httpx.InvalidURL:
        raise DeliveryError("SDNEXT_URL is not a valid URL", transient=False) from None
    if base.scheme not in DEFAULT_PORTS or not base.host:
        raise DeliveryError("SDNEXT_URL must be an http(s) URL", transient=False)
    if base.userinfo:
        raise DeliveryError(
            "SDNEXT_URL must not contain credentials; use SDNEXT_USERNAME/SDNEXT_PASSWORD",
            transient=False,
        )
    return base


def _sdnext_auth(settings: Settings) -> httpx.BasicAuth | None:
    username = settings.sdnext_username
    password = settings.sdnext_password.get_secret_value() if settings.sdnext_password else None
    if not username and not password:
        return None
    if not username or not password:
        raise DeliveryError(
            "SDNEXT_USERNAME and SDNEXT_PASSWORD must be set together", transient=False
        )
    return httpx.BasicAuth(username, password)


def _post_txt2img(
    url: str, body: dict[str, Any], auth: httpx.BasicAuth | None, timeout: float
) -> tuple[int, bytes]:
    with httpx.Client(
        auth=auth,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=False,
        trust_env=False,
    ) as client:
        response = client.post(url, json=body)
        return response.status_code, response.content


def _poll_progress(client: httpx.Client, url: str) -> float | None:
    try:
        response = client.get(url)
        value = response.json().get("progress") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None  # progress is a nicety: a failed poll never fails the job
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return min(max(float(value), 0.0), 1.0)


def deliver_sdnext(
    settings: Settings,
    request: DeliveryRequest,
    *,
    cancel: Callable[[], bool] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> DeliveryResult:
    """Generate with SDNext's txt2img, reporting progress; save the images under results_dir."""
    secret = settings.sdnext_password.get_secret_value() if settings.sdnext_password else ""
    scrub = _Scrubber([secret])
    base = _sdnext_base(settings)
    auth = _sdnext_auth(settings)
    body = txt2img_parameters(settings, request)
    _check_job_id(request.job_id)  # before generating, not after
    ignored = sorted(set(request.params) - _TXT2IMG_KEYS)
    api = str(base) + "/sdapi/v1"
    if cancel is not None and cancel():
        raise DeliveryError("cancelled", transient=False)

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdnext-txt2img")
    future: Future[tuple[int, bytes]] = executor.submit(
        _post_txt2img, api + "/txt2img", body, auth, settings.sdnext_timeout
    )
    executor.shutdown(wait=False)  # a cancelled run's request finishes on its own
    last_progress: float | None = None
    with httpx.Client(auth=auth, timeout=5.0, follow_redirects=False, trust_env=False) as poller:
        while True:
            try:
                status, content = future.result(timeout=PROGRESS_INTERVAL)
                break
            except FutureTimeout:
                pass
            except httpx.HTTPError as exc:
                raise scrub(transport_error("SDNext txt2img", exc)) from None
            if cancel is not None and cancel():
                with contextlib.suppress(httpx.HTTPError):  # cancelled either way
                    poller.post(api + "/interrupt")
                raise DeliveryError("cancelled", transient=False)
            progress = _poll_progress(poller, api + "/progress")
            if progress is not None and on_progress is not None and progress != last_progress:
                last_progress = progress
                on_progress(progress)

    if not 200 <= status < 300:
        text = content[: ERROR_EXCERPT * 4].decode("utf-8", errors="replace")
        raise scrub(status_error("SDNext txt2img", status, text))
    try:
        answer = json.loads(content)
    except ValueError:
        raise DeliveryError("SDNext answer is not JSON", transient=False) from None
    if not isinstance(answer, dict):
        raise DeliveryError("SDNext answer is not a JSON object", transient=False)
    saved = _save_images(settings, request.job_id, _decode_images(answer.get("images")))
    if on_progress is not None:
        on_progress(1.0)
    summary = {
        "backend": "sdnext",
        "images": saved,
        "parameters": _bounded_json(answer.get("parameters")),
        "info": _bounded_json(answer.get("info")),
        "ignored_params": ignored,
    }
    return DeliveryResult(summary=summary, images=saved)


class SdnextBackend:
    """params: the txt2img settings (steps, sampler_name, cfg_scale, width, height, seed,
    batch_size, n_iter) over SDNEXT_DEFAULTS."""

    mode = "sdnext"

    def check_params(self, settings: Settings, params: dict[str, Any]) -> dict[str, Any]:
        if not settings.sdnext_url:
            raise InvalidInputError("sdnext mode is not configured: set SDNEXT_URL")
        unknown = sorted(set(params) - _TXT2IMG_KEYS)
        if unknown:
            allowed = ", ".join(sorted(_TXT2IMG_KEYS))
            raise InvalidInputError(
                f"unknown sdnext params: {', '.join(unknown)} (allowed: {allowed})"
            )
        try:
            txt2img_parameters(settings, DeliveryRequest("check", "check", None, [], params))
        except DeliveryError as exc:
            raise InvalidInputError(f"params: {exc.message}") from None
        return params

    def deliver(
        self, settings: Settings, request: DeliveryRequest, context: DeliveryContext
    ) -> DeliveryResult:
        return deliver_sdnext(
            settings, request, cancel=context.cancel, on_progress=context.on_progress
        )
