"""A scripted loopback webhook receiver for the worker tests.

Unlike `fake_servers.running_webhook`, its answers can change over time: each path may have a
script of statuses (and delays) used by its first requests, after which the path's default
applies. It counts deliveries per job id, and its listen backlog is deep enough for a dozen
worker threads posting at once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.fake_servers import MAX_WAIT

# How long a scripted delay may keep a request (bounded, so a broken test cannot hang).
MAX_DELAY = 60.0


@dataclass
class Delivery:
    """One request the receiver answered (or was answering)."""

    path: str
    job_id: str | None
    body: dict[str, Any] | None
    status: int
    at: float  # time.monotonic() when it arrived


@dataclass
class Route:
    """How one path answers: `script` (status, delay) pairs first, then `status` after `delay`."""

    status: int = 200
    delay: float = 0.0
    script: list[tuple[int, float]] = field(default_factory=list)


class ScriptedWebhook:
    """Thread-safe state of the receiver; configure routes before the requests arrive."""

    def __init__(self) -> None:
        self.url = ""
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self._default = Route()
        self._deliveries: list[Delivery] = []
        self.released = threading.Event()  # set to end every pending delay at once
        self.arrived = threading.Condition(self._lock)

    # -- configuration ---------------------------------------------------------------------

    def route(
        self,
        path: str,
        *,
        status: int = 200,
        delay: float = 0.0,
        script: list[int] | list[tuple[int, float]] | None = None,
    ) -> str:
        """Set how `path` answers; returns its full URL. `script` items are a status or a
        (status, delay) pair, used in order by the first requests to the path."""
        steps = [(item, 0.0) if isinstance(item, int) else item for item in script or []]
        with self._lock:
            self._routes[path] = Route(status=status, delay=delay, script=steps)
        return self.url + path

    def set_default(self, *, status: int = 200, delay: float = 0.0) -> None:
        with self._lock:
            self._default = Route(status=status, delay=delay)

    # -- what arrived ----------------------------------------------------------------------

    def deliveries(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self._deliveries if path is None or d.path == path]

    def counts(self) -> Counter[str]:
        """Requests per job id."""
        with self._lock:
            return Counter(d.job_id for d in self._deliveries if d.job_id is not None)

    def wait_for(self, count: int, timeout: float, path: str | None = None) -> bool:
        """Block until `count` requests (to `path`, or any) arrived; False at the timeout."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                seen = sum(1 for d in self._deliveries if path is None or d.path == path)
                left = deadline - time.monotonic()
                if seen >= count:
                    return True
                if left <= 0:
                    return False
                self.arrived.wait(min(left, 0.2))

    # -- the handler's side ----------------------------------------------------------------

    def _answer_for(self, path: str, body: bytes) -> tuple[int, float]:
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        with self._lock:
            route = self._routes.get(path, self._default)
            status, delay = route.script.pop(0) if route.script else (route.status, route.delay)
            self._deliveries.append(
                Delivery(
                    path,
                    job_id,
                    payload if isinstance(payload, dict) else None,
                    status,
                    time.monotonic(),
                )
            )
            self.arrived.notify_all()
        return status, delay


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a dozen worker threads connect at once


@contextlib.contextmanager
def running_scripted_webhook() -> Iterator[ScriptedWebhook]:
    state = ScriptedWebhook()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, delay = state._answer_for(self.path, body)
            if delay:
                state.released.wait(min(delay, MAX_DELAY))
            answer = json.dumps({"ok": 200 <= status < 300}).encode()
            with contextlib.suppress(OSError):  # the worker gave up or died
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=MAX_WAIT)
