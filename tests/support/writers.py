"""Writers hitting a running API over HTTP from threads: latency and status of every write."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
    """(status, parsed body, seconds) of one JSON request to `base + path`."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (a loopback http URL)
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (local)
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    elapsed = time.perf_counter() - started
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed, elapsed


class Writers:
    """`count` threads that, until the block ends, PATCH /v1/adapters/{id} (notes, rating)
    and POST /v1/adapters/{id}/activate in turn over `ids`. `samples` holds each write's
    (status, seconds, detail of an answer that is not 2xx); `slow` the (seconds since the
    start, seconds taken) of writes over half a second."""

    def __init__(self, base: str, ids: list[str], count: int = 4) -> None:
        self.base, self.ids = base, ids
        self.stop = threading.Event()
        self.samples: list[tuple[int, float, str]] = []
        self.slow: list[tuple[float, float]] = []
        self.started = time.perf_counter()
        self.threads = [threading.Thread(target=self._write, args=(n,)) for n in range(count)]

    def _write(self, writer: int) -> None:
        count = 0
        while not self.stop.is_set():
            adapter = self.ids[(writer * 7 + count) % len(self.ids)]
            body: dict[str, Any]
            if count % 2:
                method, path, body = "POST", f"/v1/adapters/{adapter}/activate", {"weight": 0.5}
            else:
                method, path = "PATCH", f"/v1/adapters/{adapter}"
                body = {"notes": f"writer {writer} #{count}", "rating": count % 5 + 1}
            status, answer, seconds = call(self.base, method, path, body)
            self.samples.append((status, seconds, "" if status < 300 else str(answer)[:200]))
            if seconds > 0.5:
                self.slow.append((time.perf_counter() - seconds - self.started, seconds))
            count += 1

    def __enter__(self) -> Writers:
        self.started = time.perf_counter()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(180)


def finish_import(base: str, *, dry_run: bool = False) -> dict[str, Any]:
    """POST /v1/imports, then the run once it is no longer pending or running."""
    status, run, _ = call(base, "POST", "/v1/imports", {"dry_run": dry_run})
    assert status == 202, run
    while run["status"] in ("pending", "running"):
        time.sleep(0.1)
        run = call(base, "GET", f"/v1/imports/{run['id']}")[1]
    return dict(run)
