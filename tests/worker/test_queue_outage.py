"""Redis going away under a running worker: one line when the queue is lost, one when it is
back, no tracebacks, backoff in between, and jobs run again afterwards."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lora_manager.core.config import Settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.migrations import MigrationRunner
from lora_manager.core.queue import JobQueue
from lora_manager.deliveries import service
from lora_manager.deliveries.schemas import DeliverySpec, Mode
from lora_manager.worker.consumer import FIRST_QUEUE_RETRY, MAX_QUEUE_RETRY, QueueWatch
from tests.support.redis import running_redis
from tests.support.workers import describe_jobs, job, running_worker, wait_until, worker_env

COMMAND = json.dumps([sys.executable, "-c", "import sys; print('made', sys.argv[-1])"])
# Long enough for a worker polling without backoff to print thousands of lines.
OUTAGE_SECONDS = 6.0


def submit(settings: Settings, prompt: str) -> str:
    engine = make_engine(settings)
    queue = JobQueue(settings)
    try:
        with make_session_factory(engine)() as session:
            spec = DeliverySpec(mode=Mode("cli"), params={})
            created = service.queue_job(
                session, settings, queue, spec, prompt=prompt, negative_prompt=None, adapters=[]
            )
            return created.id
    finally:
        queue.close()
        engine.dispose()


def test_worker_survives_a_redis_outage_quietly(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    with running_redis(tmp_path) as redis:
        values: dict[str, Any] = {
            "DATABASE_URL": db_url,
            "REDIS_URL": redis.url,
            "DELIVERY_CLI_COMMAND": COMMAND,
            "JOB_SWEEP_INTERVAL": "0.5",
            "JOB_LEASE_SECONDS": "3",
            "LOG_LEVEL": "INFO",
        }
        settings = Settings(_env_file=None, **{k.lower(): v for k, v in values.items()})
        MigrationRunner(settings, echo=lambda _: None).upgrade()
        engine = make_engine(settings)
        with running_worker(worker_env(cli_env, **values), workers=4) as worker:
            worker.wait_consuming()
            before = submit(settings, "before")
            wait_until(
                lambda: job(engine, before).status == "succeeded",
                30,
                lambda: describe_jobs(engine) + "\n" + worker.output(),
            )
            start = len(worker.lines())

            redis.stop()
            worker.wait_for_line("queue lost", timeout=30)
            time.sleep(OUTAGE_SECONDS)  # the outage: nothing to wait for but time
            redis.restart()
            worker.wait_for_line("queue back", timeout=MAX_QUEUE_RETRY + 20)

            after = submit(settings, "after")
            wait_until(
                lambda: job(engine, after).status == "succeeded",
                30,
                lambda: describe_jobs(engine) + "\n" + worker.output(),
            )
            printed = worker.lines()[start:]
        engine.dispose()

    report = "\n".join(printed)
    assert not any("Traceback" in line for line in printed), report
    about_queue = [line for line in printed if "queue" in line.lower()]
    assert len(about_queue) <= 5, report
    lost = [line for line in printed if "queue lost" in line]
    back = [line for line in printed if "queue back" in line]
    assert len(lost) == 1 and len(back) == 1, report
    assert f"Redis (redis://127.0.0.1:{redis.port}/0)" in lost[0]
    assert "Error" in lost[0]  # the reason, e.g. "ConnectionError: Error 111 connecting …"
    assert len(printed) <= 12, report  # the two queue lines and the after-job's few


def test_watch_reports_once_hides_the_password_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(_env_file=None, redis_url="redis://:s3cret-pw@127.0.0.1:6399/0")
    watch = QueueWatch(settings)
    stop = threading.Event()
    error = ConnectionError("Error 111 connecting to redis://:s3cret-pw@127.0.0.1:6399/0.")
    pauses = []
    with caplog.at_level(logging.INFO, logger="lora_manager.worker.consumer"):
        for _ in range(8):
            # Eight threads' tries in one round: one pause, no new lines.
            for _thread in range(8):
                watch.failed(error)
            pauses.append(watch.due())
            watch._next_try = time.monotonic()  # the round's pause is over
        assert watch.wait_turn(stop)
        watch.succeeded()
        watch.succeeded()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("queue lost: Redis (redis://127.0.0.1:6399/0): ConnectionError")
    assert lines[1].startswith("queue back: Redis (redis://127.0.0.1:6399/0)")
    assert not any("s3cret-pw" in line for line in lines)
    assert not any(record.exc_info for record in caplog.records)
    expected = [min(FIRST_QUEUE_RETRY * 2**n, MAX_QUEUE_RETRY) for n in range(8)]
    assert [round(p * 4) / 4 for p in pauses] == expected  # 0.5, 1, 2, 4, 8, 10, 10, 10
    assert not watch.lost and watch.due() == 0
