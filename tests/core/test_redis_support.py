"""The throwaway Redis server the queue tests run against."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
import redis

from tests.support.redis import RedisServer, running_redis


def test_server_answers_ping(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
    finally:
        client.close()


@pytest.mark.parametrize("run", ["one", "two"])
def test_each_test_starts_from_an_empty_server(redis_url: str, run: str) -> None:
    # Whichever of the two runs second would see the other's key without the flush.
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set(f"lora-test-{run}-{uuid.uuid4().hex}", "x")
        assert client.dbsize() == 1
    finally:
        client.close()


def test_server_is_gone_after_exit(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping() is True
        finally:
            client.close()
        assert server.data_dir.is_dir()
    assert server.process.poll() is not None
    assert not server.data_dir.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1.0):
        pass


def test_missing_binary_is_an_error_not_a_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"\.ci/run installs it"), running_redis(tmp_path):
        pass
