"""The generation back ends a delivery job calls: a webhook, a local command and SDNext.

Each is a plain function taking the settings and a `DeliveryRequest` and returning a
`DeliveryResult` (its `summary` is what the job stores) or raising `DeliveryError`, whose
`transient` flag tells the job worker whether a retry may help. Rules shared by all three:

* error messages never carry secrets: no passwords, no Authorization headers, no URL
  credentials or query strings;
* whatever comes back from the other side is kept only as a bounded excerpt;
* webhooks go only to URLs under an entry of DELIVERY_HTTP_ALLOWLIST and never follow
  redirects; the local command runs from an argument list, never through a shell;
* SDNext images are checked by their magic bytes and saved under generated names only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote

import httpx

from lora_manager.core.config import Settings

HTTP_BODY_EXCERPT = 2_000
CLI_OUTPUT_EXCERPT = 4_000
SDNEXT_TEXT_EXCERPT = 4_000
ERROR_EXCERPT = 500
PROGRESS_INTERVAL = 0.5

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SAFE_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Settings whose environment variables hold secrets the local command has no need for.
_SECRET_ENV = ("API_KEY", "DATABASE_URL", "REDIS_URL", "SDNEXT_USERNAME", "SDNEXT_PASSWORD")


class DeliveryError(Exception):
    """A delivery failed; `transient` says a retry may succeed (network, timeout, 5xx, 429)."""

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
        self.status_code = status_code
        self.detail = detail or {}


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


# --- shared helpers -------------------------------------------------------------------------


def _status_error(what: str, status: int, body: str) -> DeliveryError:
    transient = status >= 500 or status == 429
    excerpt = body[:ERROR_EXCERPT]
    message = f"{what} answered HTTP {status}"
    if excerpt:
        message += f": {excerpt}"
    return DeliveryError(message, transient=transient, status_code=status)


def _transport_error(what: str, exc: httpx.HTTPError) -> DeliveryError:
    if isinstance(exc, httpx.TimeoutException):
        return DeliveryError(f"{what} timed out ({type(exc).__name__})", transient=True)
    # httpx's transport messages name the OS error, never the request headers.
    return DeliveryError(f"{what} unreachable: {type(exc).__name__}: {exc}", transient=True)


def _read_bounded(response: httpx.Response, limit_chars: int) -> tuple[str, bool]:
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


# --- webhook --------------------------------------------------------------------------------


def _origin_and_path(url: httpx.URL) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, raw path) of a URL safe to compare, or None when it is not."""
    scheme = url.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not url.host or url.userinfo:
        return None
    raw_path = url.raw_path.decode("ascii").split("?", 1)[0] or "/"
    decoded = unquote(raw_path)
    if "\\" in decoded or any(part in (".", "..") for part in decoded.split("/")):
        return None
    port = url.port or _DEFAULT_PORTS[scheme]
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
            body, cut = _read_bounded(response, HTTP_BODY_EXCERPT)
    except httpx.HTTPError as exc:
        raise _transport_error(f"webhook {shown}", exc) from None
    if not 200 <= response.status_code < 300:
        raise _status_error(f"webhook {shown}", response.status_code, body)
    return DeliveryResult(
        summary={
            "backend": "http",
            "url": shown,
            "status_code": response.status_code,
            "body": body,
            "body_truncated": cut,
        }
    )


# --- local command --------------------------------------------------------------------------


class _TailReader(threading.Thread):
    """Drains a pipe, keeping only its last `keep` bytes (a chatty command costs no memory)."""

    def __init__(self, stream: IO[bytes], keep: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.keep = keep
        self.data = b""
        self.total = 0

    def run(self) -> None:
        try:
            while chunk := self.stream.read1(65536):  # type: ignore[attr-defined]
                self.total += len(chunk)
                self.data = (self.data + chunk)[-self.keep :]
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")[-CLI_OUTPUT_EXCERPT:]


def _write_stdin(stream: IO[bytes], data: bytes) -> None:
    try:
        stream.write(data)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the command does not read its input: its exit code tells the story
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def deliver_cli(
    settings: Settings,
    request: DeliveryRequest,
    *,
    cancel: Callable[[], bool] | None = None,
) -> DeliveryResult:
    """Run DELIVERY_CLI_COMMAND with the prompt as last argument (after
    DELIVERY_CLI_END_OF_OPTIONS, `--` by default, so a prompt such as "-rf x" or "--help" is
    never an option) or on stdin; `cancel` returning true stops it (its whole process group)."""
    command = list(settings.delivery_cli_command)
    if not command:
        raise DeliveryError("DELIVERY_CLI_COMMAND is not set", transient=False)
    via_stdin = settings.delivery_cli_prompt_via == "stdin"
    marker = [settings.delivery_cli_end_of_options] if settings.delivery_cli_end_of_options else []
    argv = command if via_stdin else [*command, *marker, request.prompt]
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SECRET_ENV}
    env["LORA_JOB_ID"] = request.job_id
    env["LORA_NEGATIVE_PROMPT"] = request.negative_prompt or ""
    name = PurePosixPath(command[0]).name
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if via_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kills all of it
        )
    except (OSError, ValueError) as exc:
        raise DeliveryError(
            f"command {name!r} could not start: {type(exc).__name__}", transient=False
        ) from None
    assert process.stdout is not None and process.stderr is not None
    readers = [
        _TailReader(process.stdout, CLI_OUTPUT_EXCERPT * 4),
        _TailReader(process.stderr, CLI_OUTPUT_EXCERPT * 4),
    ]
    for reader in readers:
        reader.start()
    if via_stdin:
        assert process.stdin is not None
        threading.Thread(
            target=_write_stdin,
            args=(process.stdin, request.prompt.encode("utf-8")),
            daemon=True,
        ).start()
    timed_out = cancelled = False
    deadline = time.monotonic() + settings.delivery_cli_timeout
    while True:
        try:
            process.wait(timeout=min(PROGRESS_INTERVAL, max(deadline - time.monotonic(), 0)))
            break
        except subprocess.TimeoutExpired:
            timed_out = time.monotonic() >= deadline
            cancelled = cancel is not None and cancel()
            if timed_out or cancelled:
                _kill_group(process)
                process.wait()
                break
    for reader in readers:
        reader.join(timeout=5)  # a descendant that left the group may hold the pipe open
    stdout, stderr = readers[0].text(), readers[1].text()
    summary = {
        "backend": "cli",
        "command": name,
        "exit_code": process.returncode,
        "stdout": stdout,
        "stderr": stderr,
    }
    if cancelled:
        raise DeliveryError("cancelled", transient=False, detail=summary)
    if timed_out:
        raise DeliveryError(
            f"command {name!r} timed out after {settings.delivery_cli_timeout:g} s",
            transient=True,
            detail=summary,
        )
    if process.returncode != 0:
        excerpt = (stderr or stdout)[-ERROR_EXCERPT:]
        raise DeliveryError(
            f"command {name!r} exited with code {process.returncode}: {excerpt}",
            transient=False,
            detail=summary,
        )
    return DeliveryResult(summary=summary)


# --- SDNext ---------------------------------------------------------------------------------

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
    if base.scheme not in _DEFAULT_PORTS or not base.host:
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
                raise scrub(_transport_error("SDNext txt2img", exc)) from None
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
        raise scrub(_status_error("SDNext txt2img", status, text))
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
