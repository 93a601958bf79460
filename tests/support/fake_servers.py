"""Real loopback HTTP servers for delivery tests: a webhook receiver and an SDNext look-alike."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Upper bound on any wait inside a handler, so a broken test cannot hang the suite.
MAX_WAIT = 10.0


def tiny_png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 90)) -> bytes:
    """A valid RGB PNG built with zlib and struct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookServer:
    """Records every request; answers `status` with `body` (after waiting `delay` seconds)."""

    status: int = 200
    body: bytes = b'{"ok": true}'
    delay: float = 0.0
    location: str | None = None
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


@dataclass
class SDNextServer:
    """txt2img waits for progress polls (or an interrupt in `hang` mode), then answers."""

    mode: str = "ok"  # ok | error500 | hang | garbage
    auth: str | None = None  # expected "user:password"
    images: list[str] = field(default_factory=list)
    polls_before_answer: int = 2
    requests: list[Recorded] = field(default_factory=list)
    polls: int = 0
    poll_event: threading.Event = field(default_factory=threading.Event)
    interrupted: threading.Event = field(default_factory=threading.Event)
    txt2img_started: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


def _read(handler: BaseHTTPRequestHandler) -> Recorded:
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    return Recorded(handler.command, handler.path, dict(handler.headers.items()), body)


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def running_webhook() -> Iterator[WebhookServer]:
    state = WebhookServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            state.requests.append(_read(self))
            if state.delay:
                state.release.wait(state.delay)
            extra = {"Location": state.location} if state.location else {}
            with contextlib.suppress(OSError):  # the client gave up (timeout tests)
                _answer(self, state.status, state.body, **extra)

    with _serving(Handler) as url:
        state.url = url
        try:
            yield state
        finally:
            state.release.set()


@contextmanager
def running_sdnext() -> Iterator[SDNextServer]:
    state = SDNextServer(images=[base64.b64encode(tiny_png()).decode("ascii")])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _authorised(self) -> bool:
            if state.auth is None:
                return True
            expected = "Basic " + base64.b64encode(state.auth.encode()).decode()
            if self.headers.get("Authorization") == expected:
                return True
            _answer(self, 401, b'{"detail": "Not authenticated"}', **{"WWW-Authenticate": "Basic"})
            return False

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if self.path != "/sdapi/v1/progress":
                _answer(self, 404, b'{"detail": "Not Found"}')
                return
            with state.lock:
                state.polls += 1
                progress = min(state.polls / (state.polls_before_answer + 1), 0.99)
            state.poll_event.set()
            _answer(self, 200, json.dumps({"progress": progress, "eta_relative": 1.0}).encode())

        def do_POST(self) -> None:
            recorded = _read(self)
            state.requests.append(recorded)
            if not self._authorised():
                return
            if self.path == "/sdapi/v1/interrupt":
                state.interrupted.set()
                _answer(self, 200, b"{}")
            elif self.path == "/sdapi/v1/txt2img":
                self._txt2img(recorded)
            else:
                _answer(self, 404, b'{"detail": "Not Found"}')

        def _txt2img(self, recorded: Recorded) -> None:
            state.txt2img_started.set()
            if state.mode == "error500":
                _answer(self, 500, b'{"error": "CUDA out of memory"}')
                return
            if state.mode == "hang":
                state.interrupted.wait(MAX_WAIT)
                _answer(self, 200, json.dumps({"images": [], "info": "{}"}).encode())
                return
            while True:  # let the client see progress before answering
                with state.lock:
                    if state.polls >= state.polls_before_answer:
                        break
                state.poll_event.clear()
                if not state.poll_event.wait(MAX_WAIT):
                    break
            if state.mode == "garbage":
                images = [base64.b64encode(b"GIF89a not allowed").decode()]
            else:
                images = state.images
            answer = {
                "images": images,
                "parameters": recorded.json(),
                "info": json.dumps({"seed": 1234, "prompt": recorded.json()["prompt"]}),
            }
            _answer(self, 200, json.dumps(answer).encode())

    with _serving(Handler) as url:
        state.url = url
        try:
            yield state
        finally:
            state.interrupted.set()
            state.poll_event.set()
