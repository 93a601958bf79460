"""The queue and the lease protocol, piece by piece: JSON messages, one claim per job, a dead
worker's job swept back, lost messages queued again, and `serve`'s in-process consumer."""

from __future__ import annotations

import json
import pickle
import socket
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from huey.registry import Message
from sqlalchemy import update

from lora_manager.api import create_app
from lora_manager.core.config import Settings, load_settings
from lora_manager.core.db import make_engine
from lora_manager.core.migrations import MigrationRunner
from lora_manager.core.models import DeliveryJob, utcnow
from lora_manager.core.queue import JobQueue, JsonSerializer, QueueError, describe
from lora_manager.deliveries import repository as jobs
from lora_manager.deliveries.runner import retry_delay
from lora_manager.deliveries.tasks import DELIVER_TASK
from lora_manager.worker.consumer import QueueConsumer
from tests.support.fake_servers import running_webhook
from tests.support.postgres import free_port
from tests.support.processes import background, wait_for_status


def settings_for(url: str, tmp_path: Path, **extra: object) -> Settings:
    return load_settings(
        database_url=url,
        queue_path=tmp_path / "queue.db",
        results_dir=tmp_path / "results",
        delivery_http_allowlist=["http://127.0.0.1"],
        **extra,
    )


def migrated(settings: Settings) -> Settings:
    MigrationRunner(settings).upgrade("head")
    return settings


def add_pending(settings: Settings, count: int = 1, **fields: object) -> list[str]:
    """Pending http jobs written straight into the table (no queue message)."""
    engine = make_engine(settings)
    ids = [uuid.uuid4().hex for _ in range(count)]
    with engine.begin() as connection:
        for job_id in ids:
            values: dict[str, object] = {
                "id": job_id,
                "prompt": "a cat",
                "mode": "http",
                "params": json.dumps({"url": "http://127.0.0.1:9/x"}),
                "status": "pending",
                "created_at": utcnow(),
                "attempts": 0,
                "max_attempts": 3,
                "is_favorite": False,
                "cancel_requested": False,
            }
            values.update(fields)
            connection.execute(DeliveryJob.__table__.insert().values(**values))
    engine.dispose()
    return ids


def row(settings: Settings, job_id: str) -> DeliveryJob:
    engine = make_engine(settings)
    with engine.connect() as connection:
        found = connection.execute(
            DeliveryJob.__table__.select().where(DeliveryJob.__table__.c.id == job_id)
        ).first()
    engine.dispose()
    assert found is not None
    return found  # type: ignore[return-value]


# -- messages ------------------------------------------------------------------------------


def test_messages_are_json_and_round_trip() -> None:
    serializer = JsonSerializer()
    eta = utcnow() + timedelta(seconds=5)
    message = Message("t1", "lora_manager.core.queue.deliver", eta, 0, 0, None, ("j",), {})
    data = serializer.serialize(message)
    assert json.loads(data)["args"] == ["j"]
    back = serializer.deserialize(data)
    assert back.args == ("j",) and back.eta == eta and back.name == message.name


def test_a_pickled_message_is_refused_not_run() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("ran",))

    with pytest.raises(QueueError, match="unreadable"):
        JsonSerializer().deserialize(pickle.dumps(Boom()))


def test_redis_holds_json_messages(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, redis_url=redis_url)
    queue = JobQueue(settings)
    queue.enqueue(DELIVER_TASK, "job-1")
    assert queue.backlog() == 1
    client = redis.Redis.from_url(redis_url)
    keys = [k for k in client.keys("*") if client.type(k) == b"list"]
    assert len(keys) == 1
    (raw,) = client.lrange(keys[0], 0, -1)
    assert json.loads(raw)["args"] == ["job-1"]
    assert "redis://127.0.0.1" in describe(settings) and "@" not in describe(settings)


def test_an_unreachable_redis_is_a_queue_error(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = settings_for(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, redis_url=f"redis://127.0.0.1:{port}/0"
    )
    with pytest.raises(QueueError, match="unreachable"):
        JobQueue(settings).enqueue(DELIVER_TASK, "job-1")


def test_backoff_doubles_up_to_the_cap(tmp_path: Path) -> None:
    settings = load_settings(job_retry_delay=2, job_retry_max_delay=10)
    assert [retry_delay(settings, n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


# -- the lease protocol --------------------------------------------------------------------


def test_only_one_claim_wins(db_url: str, tmp_path: Path) -> None:
    settings = migrated(settings_for(db_url, tmp_path))
    (job_id,) = add_pending(settings)
    engine = make_engine(settings)
    assert jobs.claim(engine, job_id, "worker-a", 30)
    assert not jobs.claim(engine, job_id, "worker-b", 30)
    # Only the holder can end it.
    assert not jobs.finish(engine, job_id, "worker-b", status="succeeded", result=None, error=None)
    assert jobs.finish(engine, job_id, "worker-a", status="succeeded", result="{}", error=None)
    ended = row(settings, job_id)
    assert (ended.status, ended.attempts, ended.lease_owner) == ("succeeded", 1, None)
    # A duplicate message after the end finds nothing to claim.
    assert not jobs.claim(engine, job_id, "worker-b", 30)
    engine.dispose()


def test_a_job_not_yet_due_is_not_claimed(db_url: str, tmp_path: Path) -> None:
    settings = migrated(settings_for(db_url, tmp_path))
    later = utcnow() + timedelta(minutes=5)
    (job_id,) = add_pending(settings, next_attempt_at=later)
    engine = make_engine(settings)
    assert not jobs.claim(engine, job_id, "worker-a", 30)
    engine.dispose()


def _expire(settings: Settings, job_id: str) -> None:
    engine = make_engine(settings)
    with engine.begin() as connection:
        connection.execute(
            update(DeliveryJob.__table__)
            .where(DeliveryJob.__table__.c.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    engine.dispose()


def test_the_sweeper_gives_a_dead_workers_jobs_back(db_url: str, tmp_path: Path) -> None:
    settings = migrated(settings_for(db_url, tmp_path))
    retry_me, last_try, cancel_me = add_pending(settings, 3)
    engine = make_engine(settings)
    for job_id in (retry_me, last_try, cancel_me):
        assert jobs.claim(engine, job_id, "dead-worker", 30)
    with engine.begin() as connection:
        table = DeliveryJob.__table__
        connection.execute(update(table).where(table.c.id == last_try).values(attempts=3))
        connection.execute(
            update(table).where(table.c.id == cancel_me).values(cancel_requested=True)
        )
    consumer = QueueConsumer(settings, threads=1)
    try:
        assert consumer.sweep() == 0  # leases still valid: nothing to do
        for job_id in (retry_me, last_try, cancel_me):
            _expire(settings, job_id)
        assert consumer.sweep() == 1
        assert consumer.queue.backlog() == 1
        again, failed, cancelled = (row(settings, i) for i in (retry_me, last_try, cancel_me))
        assert (again.status, again.attempts, again.lease_owner) == ("pending", 1, None)
        assert "worker lost" in again.last_error
        assert failed.status == "failed" and failed.finished_at is not None
        assert cancelled.status == "cancelled"
        # The dead worker, back from a pause, cannot end what it no longer holds.
        assert not jobs.finish(
            engine, retry_me, "dead-worker", status="succeeded", result=None, error=None
        )
    finally:
        consumer.queue.close()
        consumer.engine.dispose()
        engine.dispose()


def test_lost_messages_are_queued_again_only_when_the_queue_is_idle(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = migrated(settings_for(sqlite_url, tmp_path, job_requeue_after=60))
    old = utcnow() - timedelta(minutes=5)
    (lost,) = add_pending(settings, created_at=old)
    (fresh,) = add_pending(settings)
    consumer = QueueConsumer(settings, threads=1)
    try:
        consumer.queue.enqueue(DELIVER_TASK, "something-else")
        assert consumer.sweep() == 0  # the queue is busy: its messages may still carry it
        consumer.queue.huey.flush()
        assert consumer.sweep() == 1  # idle: the overdue one goes back, the fresh one waits
        assert consumer.queue.backlog() == 1
        assert row(settings, fresh).status == row(settings, lost).status == "pending"
    finally:
        consumer.queue.close()
        consumer.engine.dispose()


def test_a_job_saved_while_the_queue_was_down_still_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = migrated(settings_for(url, tmp_path, redis_url=f"redis://127.0.0.1:{port}/0"))
    with running_webhook() as hook, TestClient(create_app(down)) as client:
        down.delivery_http_allowlist[:] = [hook.url]
        answer = client.post(
            "/v1/deliveries",
            json={"mode": "http", "prompt": "a cat", "params": {"url": hook.url + "/x"}},
        )
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["id"]
        assert client.get(f"/v1/deliveries/{job_id}").json()["status"] == "pending"
        # The queue comes back (here: the SQLite one); a sweeper finds the job and queues it.
        up = settings_for(url, tmp_path, job_requeue_after=0.001)
        up.delivery_http_allowlist[:] = [hook.url]
        consumer = QueueConsumer(up, threads=1)
        try:
            assert consumer.sweep() == 1
            consumer.runner.run(job_id)  # what a consumer thread does with the message
        finally:
            consumer.queue.close()
            consumer.engine.dispose()
        assert client.get(f"/v1/deliveries/{job_id}").json()["status"] == "succeeded"
        assert [r.json()["job_id"] for r in hook.requests] == [job_id]


# -- serve's in-process consumer -----------------------------------------------------------


@pytest.mark.parametrize("worker_flag", ["", "--no-worker"])
def test_serve_runs_jobs_in_process_unless_told_not_to(
    worker_flag: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    import httpx

    port = free_port()
    with running_webhook() as hook:
        env = dict(
            cli_env,
            DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
            RESULTS_DIR=str(tmp_path / "results"),
            DELIVERY_HTTP_ALLOWLIST=hook.url,
            PORT=str(port),
        )
        argv = ["lora-manager", "serve", *([worker_flag] if worker_flag else [])]
        with background(argv, env) as server:
            base = f"http://127.0.0.1:{port}"
            wait_for_status(base + "/health/ready", 200, timeout=60)
            created = httpx.post(
                base + "/v1/deliveries",
                json={"mode": "http", "prompt": "a cat", "params": {"url": hook.url + "/x"}},
            )
            assert created.status_code == 201, created.text
            job_url = f"{base}/v1/deliveries/{created.json()['id']}"
            deadline = utcnow() + timedelta(seconds=20)
            status = "pending"
            while utcnow() < deadline and status in ("pending", "running"):
                status = httpx.get(job_url).json()["status"]
                if worker_flag and utcnow() > deadline - timedelta(seconds=17):
                    break  # three seconds is plenty for an in-process worker that exists
                time.sleep(0.05)
            assert server.poll() is None
        if worker_flag:
            assert status == "pending" and hook.requests == []
        else:
            assert status == "succeeded" and len(hook.requests) == 1


def test_a_briefly_busy_database_does_not_lose_a_jobs_end() -> None:
    from sqlalchemy.exc import OperationalError

    from lora_manager.deliveries.runner import DB_TRIES, with_db_retries

    calls: list[int] = []

    def busy_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE", {}, Exception("database is locked"))
        return "ended"

    assert with_db_retries("job x", busy_twice) == "ended" and len(calls) == 3

    def always_busy() -> str:
        calls.append(1)
        raise OperationalError("UPDATE", {}, Exception("database is locked"))

    calls.clear()
    with pytest.raises(OperationalError):
        with_db_retries("job x", always_busy)
    assert len(calls) == DB_TRIES
