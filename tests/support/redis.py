"""A throwaway Redis server for tests: own data dir, loopback port, no persistence."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.postgres import free_port


@dataclass
class RedisServer:
    """A running server; `url` points at its database 0."""

    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path
    argv: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server (an outage); `restart()` brings it back on the same port, empty."""
        _stop(self.process)

    def restart(self, timeout: float = 10.0) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_ping(self, timeout)

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"


def _command(host: str, port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one RESP command over a plain socket; return its reply (a bulk string's payload)."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((host, port), timeout) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        head, _, rest = reply.partition(b"\r\n")
        if not head.startswith(b"$") or head == b"$-1":
            return head
        size = int(head[1:])
        while len(rest) < size:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        return rest[:size]


def flush(url: str) -> None:
    """FLUSHALL on the server behind a redis:// URL (every database, not only the URL's)."""
    parts = urlsplit(url)
    reply = _command(parts.hostname or "127.0.0.1", parts.port or 6379, "FLUSHALL")
    if reply != b"+OK":
        raise RuntimeError(f"FLUSHALL on {url} answered {reply!r}")


def _log_excerpt(log_file: Path, limit: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return log_file.read_text(errors="replace")[-limit:]
    return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def running_redis(tmp_dir: Path | None = None, timeout: float = 10.0) -> Iterator[RedisServer]:
    """Start redis-server on a free loopback port; stop it and remove its dir on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on PATH: .ci/run installs it (apt redis-server)")
    data_dir = Path(tempfile.mkdtemp(prefix="lora-redis-", dir=tmp_dir))
    port = free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]
    try:
        with (data_dir / "redis.log").open("wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = RedisServer(port=port, process=process, data_dir=data_dir, argv=argv)
        try:
            _wait_ping(server, timeout)
            yield server
        finally:
            _stop(server.process)  # the latest one, after a restart()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ping(server: RedisServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {server.process.returncode} before answering PING:\n"
                + _log_excerpt(server.log_file)
            )
        with contextlib.suppress(OSError):
            if _command("127.0.0.1", server.port, "PING", timeout=0.5).startswith(b"+PONG"):
                # Another server may have taken the port between free_port() and our bind.
                info = _command("127.0.0.1", server.port, "INFO", "server", timeout=0.5)
                if f"process_id:{server.process.pid}\r\n".encode() in info:
                    return
        time.sleep(0.05)
    raise RuntimeError(
        f"redis-server did not answer PING on port {server.port} within {timeout}s:\n"
        + _log_excerpt(server.log_file)
    )
