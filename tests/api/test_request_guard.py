"""The request guard on a live `lora-manager serve`, over raw sockets: the API key is checked
and an oversized body refused before the body is read (the client never sends it), and a
chunked body is cut off at MAX_REQUEST_BYTES."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.postgres import free_port
from tests.support.processes import BIN_DIR, serving

KEY = "guard-key"
LIMIT = 64 * 1024
HUGE = 300 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("guard")
    port = free_port()
    env = {
        "PATH": f"{BIN_DIR}:/usr/bin:/bin",
        "LORA_MANAGER_ENV_FILE": str(folder / "none.env"),
        "DATABASE_URL": f"sqlite:///{folder / 'lora.db'}",
        "API_KEY": KEY,
        "MAX_REQUEST_BYTES": str(LIMIT),
        "PORT": str(port),
        "RESULTS_DIR": str(folder / "results"),
        "PYTHONUNBUFFERED": "1",
    }
    argv = ["lora-manager", "serve", "--no-worker"]
    with serving(argv, env, f"http://127.0.0.1:{port}/health/ready"):
        yield port


def exchange(
    port: int, head: str, chunks: Iterator[bytes] | None = None
) -> tuple[int, dict[str, Any]]:
    """Send the request line and headers (and `chunks`, until the server answers or closes);
    return the status and the JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head.encode("latin-1") + b"\r\n")
        for chunk in chunks or iter(()):
            # Stop sending once the server has answered: what it never read stays unsent.
            if select.select([conn], [], [], 0.02)[0]:
                break
            try:
                conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        received = b""
        while not _complete(received):
            data = conn.recv(65536)
            if not data:
                break
            received += data
    header, _, body = received.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


def _complete(received: bytes) -> bool:
    if b"\r\n\r\n" not in received:
        return False
    header, _, body = received.partition(b"\r\n\r\n")
    for line in header.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def request_head(path: str, *headers: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    return "\r\n".join([*lines, *headers]) + "\r\n"


def test_no_key_is_401_before_a_300_mb_body_is_read(server: int) -> None:
    # The body is announced and never sent: an answer proves nothing waited for it.
    for headers in ([], ["X-API-Key: wrong"], [f"X-API-Key: {KEY}x"]):
        head = request_head("/v1/adapters/bulk", f"Content-Length: {HUGE}", *headers)
        status, body = exchange(server, head)
        assert status == 401, body
        assert body == {"detail": "invalid or missing API key (X-API-Key header)"}


def test_an_announced_body_past_the_limit_is_413_before_it_is_read(server: int) -> None:
    for length in (HUGE, LIMIT + 1):
        head = request_head("/v1/adapters/bulk", f"Content-Length: {length}", f"X-API-Key: {KEY}")
        status, body = exchange(server, head)
        assert status == 413, body
        assert str(LIMIT) in body["detail"] and "MAX_REQUEST_BYTES" in body["detail"]


def _chunked(total: int, size: int = 8192) -> Iterator[bytes]:
    payload = b'{"ids": [' + b" " * (total - 9)
    for start in range(0, len(payload), size):
        part = payload[start : start + size]
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def test_a_chunked_body_is_cut_off_at_the_limit(server: int) -> None:
    head = request_head("/v1/adapters/bulk", "Transfer-Encoding: chunked", f"X-API-Key: {KEY}")
    status, body = exchange(server, head, _chunked(4 * 1024 * 1024))
    assert status == 413, body
    # Without a key the same stream is refused with 401 before any chunk is read.
    head = request_head("/v1/adapters/bulk", "Transfer-Encoding: chunked")
    status, _ = exchange(server, head, _chunked(4 * 1024 * 1024))
    assert status == 401


def test_a_body_within_the_limit_reaches_the_route(server: int) -> None:
    body = json.dumps({"ids": ["x" * 100] * 300, "action": "delete"}).encode()
    assert len(body) < LIMIT
    head = request_head("/v1/adapters/bulk", f"Content-Length: {len(body)}", f"X-API-Key: {KEY}")
    status, answer = exchange(server, head, iter([body]))
    assert status == 200, answer
    assert answer["matched"] == 0 and len(answer["not_found"]) == 300
    chunked = request_head("/v1/adapters/bulk", "Transfer-Encoding: chunked", f"X-API-Key: {KEY}")
    parts = [f"{len(body):x}\r\n".encode() + body + b"\r\n", b"0\r\n\r\n"]
    status, answer = exchange(server, chunked, iter(parts))
    assert status == 200, answer


def test_health_and_the_openapi_document_need_no_key(server: int) -> None:
    for path in ("/health/live", "/openapi.json"):
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        status, _ = exchange(server, head)
        assert status == 200, path


def test_every_protected_operation_documents_401_and_413(server: int) -> None:
    status, document = exchange(server, "GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert status == 200
    operations = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        if path.startswith("/v1/")
        for method, operation in methods.items()
    ]
    assert len(operations) > 30
    for path, method, operation in operations:
        assert {"401", "413"} <= set(operation["responses"]), f"{method} {path}"
        assert operation["security"] == [{"APIKeyHeader": []}], f"{method} {path}"
