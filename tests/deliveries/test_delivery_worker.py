"""Delivery jobs run by real `lora-manager worker` processes.

Every worker here is a subprocess (`tests.support.workers`), talking to a real database (SQLite
file or PostgreSQL), a real queue (Huey on a SQLite file or on redis-server) and real loopback
back ends: a scripted webhook receiver, the SDNext look-alike and a small Python command.
Waits are bounded polls of the `deliveryjob` rows; a timeout shows the rows and every worker's
output. Leases are short (2 s, swept every 0.5 s) so crash recovery happens within a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lora_manager.api import create_app
from lora_manager.core.config import Settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.migrations import MigrationRunner
from lora_manager.core.models import DeliveryJob, utcnow
from lora_manager.core.queue import JobQueue
from lora_manager.deliveries import repository as jobs
from lora_manager.deliveries import service
from lora_manager.deliveries.schemas import DeliverySpec, Mode
from lora_manager.deliveries.tasks import DELIVER_TASK
from tests.support.fake_servers import SDNextServer, tiny_png
from tests.support.processes import REPO_ROOT
from tests.support.webhooks import ScriptedWebhook, running_scripted_webhook
from tests.support.workers import (
    WorkerProcess,
    describe_jobs,
    job,
    job_rows,
    running_worker,
    wait_until,
    with_settings,
    worker_env,
)

# Short timings: leases expire and are swept within seconds, retries come quickly.
FAST = {
    "JOB_LEASE_SECONDS": "2",
    "JOB_SWEEP_INTERVAL": "0.5",
    "JOB_REQUEUE_AFTER": "2",
    "JOB_RETRY_DELAY": "0.2",
    "JOB_RETRY_MAX_DELAY": "2",
    "JOB_MAX_ATTEMPTS": "3",
    "WORKER_SHUTDOWN_TIMEOUT": "5",
    "DELIVERY_HTTP_TIMEOUT": "10",
    "LOG_LEVEL": "INFO",
}
# Longest a single job in these tests may take from queued to finished (retries included).
JOB_TIMEOUT = 30.0

# The local command of the cli tests: its prompt says what to do.
#   fail:N            print to stderr, exit N
#   sleep:S:PIDFILE   write its pid to PIDFILE, sleep S seconds, succeed
#   once:MARKER       first run: create MARKER (holding its pid) and sleep 60 s; later: succeed
#   anything else     print "echo: <prompt>" and the job id it got
TOOL = r"""
import os, pathlib, sys, time
prompt = sys.argv[-1]  # after the '--' the worker puts before it
kind, _, arg = prompt.partition(":")

def note_pid(path):
    path = pathlib.Path(path)
    part = path.with_name(path.name + ".part")
    part.write_text(str(os.getpid()))
    part.replace(path)

if kind == "fail":
    print("tool failed on purpose", file=sys.stderr)
    sys.exit(int(arg))
if kind == "sleep":
    seconds, _, pid_file = arg.partition(":")
    note_pid(pid_file)
    time.sleep(float(seconds))
elif kind == "once" and not pathlib.Path(arg).exists():
    note_pid(arg)
    time.sleep(60)
print("echo: " + prompt + " job=" + os.environ.get("LORA_JOB_ID", ""))
"""
TOOL_COMMAND = json.dumps([sys.executable, "-c", TOOL])


# --- the stack under test ---------------------------------------------------------------------


class Stack:
    """One database + queue + settings, shared by the test process and its worker processes."""

    def __init__(
        self,
        base_env: dict[str, str],
        tmp_path: Path,
        database_url: str,
        redis_url: str | None,
        settings: dict[str, Any],
    ) -> None:
        values: dict[str, Any] = {
            **FAST,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "QUEUE_PATH": None if redis_url else str(tmp_path / "queue" / "jobs-queue.db"),
            "RESULTS_DIR": str(tmp_path / "results"),
            **settings,
        }
        self.values = {k: str(v) for k, v in values.items() if v is not None}
        self.env = worker_env(base_env, **self.values)
        self.settings = Settings(
            _env_file=None,
            **{k.lower(): v for k, v in self.values.items()},
        )
        self.workers: list[WorkerProcess] = []
        self._exit = ExitStack()
        self._engine: Engine | None = None
        self._queue: JobQueue | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings)
        return self._engine

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = JobQueue(self.settings)
        return self._queue

    def migrate(self) -> Stack:
        MigrationRunner(self.settings, echo=lambda _: None).upgrade()
        return self

    def worker(self, workers: int = 2, label: str | None = None, **env: Any) -> WorkerProcess:
        """Start a worker process (stopped at the end of the test); `env` overrides settings."""
        label = label or f"w{len(self.workers) + 1}"
        process = self._exit.enter_context(
            running_worker(with_settings(self.env, **env), workers=workers, label=label)
        )
        self.workers.append(process)
        return process

    def api(self) -> TestClient:
        return TestClient(create_app(self.settings, migrate_on_startup=False))

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        mode: str,
        params: dict[str, Any] | None = None,
        *,
        prompt: str = "a cat, <lora:catstyle:0.8>",
        negative_prompt: str | None = None,
        adapters: list[dict[str, Any]] | None = None,
        max_attempts: int | None = None,
    ) -> str:
        """Queue a job the way the API does (`service.queue_job`); returns its id."""
        spec = DeliverySpec(mode=Mode(mode), params=params or {}, max_attempts=max_attempts)
        with make_session_factory(self.engine)() as session:
            created = service.queue_job(
                session,
                self.settings,
                self.queue,
                spec,
                prompt=prompt,
                negative_prompt=negative_prompt,
                adapters=adapters or [],
            )
            return created.id

    def explain(self, ids: Iterable[str] | None = None) -> Callable[[], str]:
        def text() -> str:
            parts = [describe_jobs(self.engine, ids)]
            parts += [w.output() for w in self.workers]
            return "\n".join(parts)

        return text

    def wait_finished(
        self, ids: Iterable[str], timeout: float = JOB_TIMEOUT
    ) -> dict[str, DeliveryJob]:
        wanted = list(ids)

        def done() -> dict[str, DeliveryJob] | None:
            rows = job_rows(self.engine, wanted)
            finished = all(
                job_id in rows and rows[job_id].status in jobs.FINISHED for job_id in wanted
            )
            return rows if finished else None

        return wait_until(done, timeout, self.explain(wanted))

    def wait_status(self, job_id: str, status: str, timeout: float = JOB_TIMEOUT) -> DeliveryJob:
        return wait_until(
            lambda: row if (row := job(self.engine, job_id)).status == status else None,
            timeout,
            self.explain([job_id]),
        )

    def close(self) -> None:
        try:
            self._exit.close()  # the workers first, while the database is still there
        finally:
            if self._queue is not None:
                self._queue.close()
            if self._engine is not None:
                self._engine.dispose()


@pytest.fixture
def make_stack(
    cli_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Stack]]:
    """make_stack(database_url, redis=False, **settings) → a Stack cleaned up after the test."""
    stacks: list[Stack] = []

    def make(database_url: str, *, redis: bool = False, **settings: Any) -> Stack:
        redis_url = request.getfixturevalue("redis_url") if redis else None
        folder = tmp_path / f"stack{len(stacks)}"
        folder.mkdir()
        stack = Stack(cli_env, folder, database_url, redis_url, settings)
        stacks.append(stack)
        return stack

    yield make
    for stack in reversed(stacks):
        stack.close()


@pytest.fixture
def scripted_webhook() -> Iterator[ScriptedWebhook]:
    with running_scripted_webhook() as server:
        yield server


def result_of(row: DeliveryJob) -> dict[str, Any]:
    return json.loads(row.result) if row.result else {}


def process_alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(path: Path, timeout: float = 15.0) -> int:
    wait_until(path.exists, timeout, lambda: f"{path} was never written")
    return int(path.read_text())


def kill_leftover(pid: int | None) -> None:
    if pid is not None and process_alive(pid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- 1. a webhook job end to end --------------------------------------------------------------


@pytest.mark.parametrize("queue", ["sqlite-queue", "redis-queue"])
def test_webhook_job_succeeds_end_to_end(
    queue: str, db_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    stack = make_stack(
        db_url,
        redis=queue == "redis-queue",
        DELIVERY_HTTP_ALLOWLIST=f"{scripted_webhook.url}/hooks/",
    ).migrate()
    url = scripted_webhook.route("/hooks/lora")
    worker = stack.worker()
    with stack.api() as client:
        created = client.post(
            "/v1/deliveries",
            json={
                "mode": "http",
                "prompt": "a cat, <lora:catstyle:0.8>",
                "negative_prompt": "blurry",
                "params": {"url": url, "data": {"style": "ink", "n": 7}},
            },
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert created.json()["status"] == "pending"
        row = stack.wait_finished([job_id])[job_id]
        shown = client.get(f"/v1/deliveries/{job_id}").json()

    assert row.status == "succeeded", stack.explain([job_id])()
    assert row.attempts == 1 and row.last_error is None
    assert row.started_at is not None and row.finished_at is not None
    assert row.created_at <= row.started_at <= row.finished_at
    assert row.lease_owner is None and row.lease_expires_at is None
    assert row.progress == 1.0
    summary = result_of(row)
    assert summary["status_code"] == 200 and summary["backend"] == "http"
    assert summary["url"] == url
    assert shown["status"] == "succeeded" and shown["result"]["status_code"] == 200

    [delivery] = scripted_webhook.deliveries()
    assert delivery.path == "/hooks/lora"
    assert delivery.body == {
        "job_id": job_id,
        "prompt": "a cat, <lora:catstyle:0.8>",
        "negative_prompt": "blurry",
        "adapters": [],
        "params": {"style": "ink", "n": 7},
    }
    assert worker.saw(f"job {job_id}: succeeded")


# --- 2. webhook status codes: fail, retry, recover --------------------------------------------


def test_webhook_status_decides_fail_retry_or_recover(
    db_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    stack = make_stack(db_url, DELIVERY_HTTP_ALLOWLIST=scripted_webhook.url).migrate()
    rejected = scripted_webhook.route("/rejected", status=422)
    down = scripted_webhook.route("/down", status=503)
    flaky = scripted_webhook.route("/flaky", script=[503, 503], status=200)
    ids = {
        "rejected": stack.submit("http", {"url": rejected, "data": {"case": "rejected"}}),
        "down": stack.submit("http", {"url": down, "data": {"case": "down"}}, max_attempts=3),
        "flaky": stack.submit("http", {"url": flaky, "data": {"case": "flaky"}}, max_attempts=4),
    }
    stack.worker(workers=3)
    rows = stack.wait_finished(ids.values())
    explain = stack.explain(ids.values())

    # 4xx: the other side refused; retrying cannot help.
    row = rows[ids["rejected"]]
    assert (row.status, row.attempts) == ("failed", 1), explain()
    assert row.last_error is not None and "HTTP 422" in row.last_error
    assert "attempt" not in row.last_error  # a permanent failure names no attempt count
    assert len(scripted_webhook.deliveries("/rejected")) == 1

    # 503 for ever: every attempt used, then failed.
    row = rows[ids["down"]]
    assert (row.status, row.attempts, row.max_attempts) == ("failed", 3, 3), explain()
    assert row.last_error is not None and "HTTP 503" in row.last_error
    assert "attempt 3 of 3" in row.last_error
    assert row.next_attempt_at is None
    down_times = [d.at for d in scripted_webhook.deliveries("/down")]
    assert len(down_times) == 3
    # Backoff: 0.2 s, then 0.4 s (JOB_RETRY_DELAY doubling); the queue may add to it, never less.
    assert down_times[1] - down_times[0] >= 0.2 - 0.05
    assert down_times[2] - down_times[1] >= 0.4 - 0.05

    # 503 twice, then 200: succeeded on the third attempt.
    row = rows[ids["flaky"]]
    assert (row.status, row.attempts) == ("succeeded", 3), explain()
    assert row.last_error is None and result_of(row)["status_code"] == 200
    assert [d.status for d in scripted_webhook.deliveries("/flaky")] == [503, 503, 200]
    assert {d.job_id for d in scripted_webhook.deliveries("/flaky")} == {ids["flaky"]}


# --- 3. SDNext ------------------------------------------------------------------------------


def test_sdnext_job_saves_images_served_by_the_api(
    db_url: str, make_stack: Callable[..., Stack], sdnext: SDNextServer
) -> None:
    stack = make_stack(db_url, SDNEXT_URL=sdnext.url).migrate()
    stack.worker()
    with stack.api() as client:
        created = client.post(
            "/v1/deliveries",
            json={"mode": "sdnext", "prompt": "a cat", "params": {"steps": 4, "seed": 7}},
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        row = stack.wait_finished([job_id])[job_id]
        assert row.status == "succeeded", stack.explain([job_id])()
        shown = client.get(f"/v1/deliveries/{job_id}").json()
        image = client.get(f"/v1/deliveries/{job_id}/results/0")
        missing = client.get(f"/v1/deliveries/{job_id}/results/1")

    assert row.attempts == 1 and row.progress == 1.0
    summary = result_of(row)
    assert summary["backend"] == "sdnext"
    assert summary["images"] == [f"{job_id}/00.png"]
    saved = Path(stack.settings.results_dir) / job_id / "00.png"
    assert saved.read_bytes() == tiny_png()
    assert sorted(p.name for p in saved.parent.iterdir()) == ["00.png"]  # no .part left
    assert shown["images"] == [f"/v1/deliveries/{job_id}/results/0"]
    assert image.status_code == 200 and image.content == tiny_png()
    assert image.headers["content-type"] == "image/png"
    assert missing.status_code == 404
    assert sdnext.polls >= sdnext.polls_before_answer  # the worker watched the progress
    [call] = [r for r in sdnext.requests if r.path == "/sdapi/v1/txt2img"]
    assert call.json()["prompt"] == "a cat" and call.json()["steps"] == 4


def test_sdnext_server_error_is_retried_then_fails(
    sqlite_url: str, make_stack: Callable[..., Stack], sdnext: SDNextServer
) -> None:
    sdnext.mode = "error500"
    stack = make_stack(sqlite_url, SDNEXT_URL=sdnext.url).migrate()
    job_id = stack.submit("sdnext", {"steps": 4}, max_attempts=2)
    stack.worker()
    row = stack.wait_finished([job_id])[job_id]
    assert (row.status, row.attempts) == ("failed", 2), stack.explain([job_id])()
    assert row.last_error is not None
    assert "HTTP 500" in row.last_error and "attempt 2 of 2" in row.last_error
    assert len([r for r in sdnext.requests if r.path == "/sdapi/v1/txt2img"]) == 2
    assert not (Path(stack.settings.results_dir) / job_id).exists()


# --- 4. the local command -------------------------------------------------------------------


def test_cli_jobs_succeed_fail_and_time_out(
    db_url: str, make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack(
        db_url, DELIVERY_CLI_COMMAND=TOOL_COMMAND, DELIVERY_CLI_TIMEOUT="1"
    ).migrate()
    slow_pid = tmp_path / "slow.pid"
    ids = {
        "ok": stack.submit("cli", prompt="a cat, <lora:catstyle:0.8>"),
        "exit3": stack.submit("cli", prompt="fail:3"),
        "slow": stack.submit("cli", prompt=f"sleep:30:{slow_pid}", max_attempts=2),
    }
    stack.worker(workers=3)
    try:
        rows = stack.wait_finished(ids.values())
    finally:
        kill_leftover(int(slow_pid.read_text()) if slow_pid.exists() else None)
    explain = stack.explain(ids.values())

    row = rows[ids["ok"]]
    assert (row.status, row.attempts) == ("succeeded", 1), explain()
    summary = result_of(row)
    assert summary["exit_code"] == 0 and summary["backend"] == "cli"
    assert summary["stdout"].strip() == f"echo: a cat, <lora:catstyle:0.8> job={ids['ok']}"

    row = rows[ids["exit3"]]
    assert (row.status, row.attempts) == ("failed", 1), explain()  # not transient
    assert row.last_error is not None and "exited with code 3" in row.last_error
    assert "tool failed on purpose" in row.last_error
    assert result_of(row)["exit_code"] == 3

    row = rows[ids["slow"]]
    assert (row.status, row.attempts) == ("failed", 2), explain()  # transient: retried
    assert row.last_error is not None
    assert "timed out after 1 s" in row.last_error and "attempt 2 of 2" in row.last_error
    assert not process_alive(int(slow_pid.read_text()))  # the timed-out command was killed


# --- 5. cancel ------------------------------------------------------------------------------


def test_cancelled_pending_job_never_reaches_the_back_end(
    db_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    stack = make_stack(db_url, DELIVERY_HTTP_ALLOWLIST=scripted_webhook.url).migrate()
    url = scripted_webhook.route("/hook")
    with stack.api() as client:
        cancelled = client.post(
            "/v1/deliveries", json={"mode": "http", "prompt": "never", "params": {"url": url}}
        ).json()["id"]
        answer = client.post(f"/v1/deliveries/{cancelled}/cancel")
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
        # Queued after it: with one worker thread the queue is taken in order, so once this
        # one is done the cancelled job's message has been read (and found nothing to do).
        after = client.post(
            "/v1/deliveries", json={"mode": "http", "prompt": "after", "params": {"url": url}}
        ).json()["id"]
        stack.worker(workers=1)
        rows = stack.wait_finished([after])
        assert client.post(f"/v1/deliveries/{cancelled}/cancel").status_code == 409

    assert rows[after].status == "succeeded", stack.explain()()
    row = job(stack.engine, cancelled)
    assert (row.status, row.attempts, row.started_at) == ("cancelled", 0, None)
    assert stack.queue.backlog() == 0
    assert [d.job_id for d in scripted_webhook.deliveries()] == [after]


def test_running_cli_job_is_cancelled_and_its_command_killed(
    sqlite_url: str, make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack(sqlite_url, DELIVERY_CLI_COMMAND=TOOL_COMMAND).migrate()
    pid_file = tmp_path / "sleeper.pid"
    stack.worker()
    pid = None
    with stack.api() as client:
        job_id = client.post(
            "/v1/deliveries", json={"mode": "cli", "prompt": f"sleep:60:{pid_file}"}
        ).json()["id"]
        try:
            stack.wait_status(job_id, "running")
            pid = read_pid(pid_file)
            started = time.monotonic()
            answer = client.post(f"/v1/deliveries/{job_id}/cancel")
            assert answer.status_code == 200, answer.text
            assert answer.json()["cancel_requested"] is True
            row = stack.wait_finished([job_id], timeout=10)[job_id]
            took = time.monotonic() - started
            assert not process_alive(pid)
        finally:
            kill_leftover(pid)

    assert row.status == "cancelled", stack.explain([job_id])()
    assert row.attempts == 1 and row.last_error == "cancelled while running"
    assert result_of(row)["exit_code"] == -signal.SIGKILL
    assert took < 5  # renewals every 2/3 s, command polled every 0.5 s


def test_running_sdnext_job_is_cancelled_and_interrupted(
    db_url: str, make_stack: Callable[..., Stack], sdnext: SDNextServer
) -> None:
    sdnext.mode = "hang"
    stack = make_stack(db_url, SDNEXT_URL=sdnext.url).migrate()
    stack.worker()
    with stack.api() as client:
        job_id = client.post(
            "/v1/deliveries", json={"mode": "sdnext", "prompt": "a cat", "params": {"steps": 4}}
        ).json()["id"]
        assert sdnext.txt2img_started.wait(JOB_TIMEOUT), stack.explain([job_id])()
        stack.wait_status(job_id, "running")
        started = time.monotonic()
        assert client.post(f"/v1/deliveries/{job_id}/cancel").status_code == 200
        row = stack.wait_finished([job_id], timeout=10)[job_id]
        took = time.monotonic() - started

    assert row.status == "cancelled", stack.explain([job_id])()
    assert row.attempts == 1 and row.last_error == "cancelled while running"
    assert sdnext.interrupted.is_set()
    assert [r.path for r in sdnext.requests].count("/sdapi/v1/interrupt") == 1
    assert took < 5


# --- 6. a worker started before the migrations ----------------------------------------------


def test_worker_waits_for_the_schema_then_runs_jobs(
    db_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    stack = make_stack(db_url, DELIVERY_HTTP_ALLOWLIST=scripted_webhook.url)  # not migrated
    url = scripted_webhook.route("/hook")
    # A message already waiting: a worker that has no schema yet must leave it alone.
    stack.queue.enqueue(DELIVER_TASK, "queued-before-the-schema")
    worker = stack.worker()
    line = worker.wait_for_line("waiting for the schema", 30)
    assert "head is" in line
    time.sleep(1.5)  # more than one schema poll
    assert not worker.saw("thread(s) as") and not worker.saw("schema at head")
    assert stack.queue.backlog() == 1
    assert worker.process.poll() is None

    upgrade = subprocess.run(
        ["lora-manager", "db", "upgrade"],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    worker.wait_consuming(30)
    job_id = stack.submit("http", {"url": url, "data": {"late": True}})
    row = stack.wait_finished([job_id])[job_id]
    assert (row.status, row.attempts) == ("succeeded", 1), stack.explain([job_id])()
    assert [d.job_id for d in scripted_webhook.deliveries()] == [job_id]
    wait_until(lambda: stack.queue.backlog() == 0, 10, stack.explain())


# --- the sweeper: lost messages, dead workers -----------------------------------------------


def test_job_whose_message_was_lost_is_queued_again(
    db_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    stack = make_stack(db_url, DELIVERY_HTTP_ALLOWLIST=scripted_webhook.url).migrate()
    url = scripted_webhook.route("/hook")
    # Saved but never queued, as when the queue was unreachable at the time.
    with make_session_factory(stack.engine)() as session:
        row = DeliveryJob(
            prompt="orphan",
            mode="http",
            params=json.dumps({"url": url}),
            status=jobs.PENDING,
            attempts=0,
            max_attempts=3,
            adapters=[],
            created_at=utcnow(),
        )
        session.add(row)
        session.commit()
        job_id = row.id
    created = time.monotonic()
    stack.worker()
    row = stack.wait_finished([job_id], timeout=20)[job_id]
    assert (row.status, row.attempts) == ("succeeded", 1), stack.explain([job_id])()
    assert time.monotonic() - created >= 2  # JOB_REQUEUE_AFTER: not before it was overdue
    assert scripted_webhook.counts() == {job_id: 1}


def test_killed_worker_on_its_last_attempt_fails_the_job(
    sqlite_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    stack = make_stack(sqlite_url, DELIVERY_HTTP_ALLOWLIST=scripted_webhook.url).migrate()
    url = scripted_webhook.route("/hook", delay=30)
    doomed = stack.worker(label="doomed")
    job_id = stack.submit("http", {"url": url}, max_attempts=1)
    assert scripted_webhook.wait_for(1, JOB_TIMEOUT), stack.explain([job_id])()
    doomed.kill_hard()
    stack.worker(label="sweeper")
    row = stack.wait_finished([job_id], timeout=20)[job_id]
    assert (row.status, row.attempts) == ("failed", 1), stack.explain([job_id])()
    assert row.last_error == "worker lost: lease expired during attempt 1 of 1"
    assert row.lease_owner is None and row.finished_at is not None
    assert scripted_webhook.counts() == {job_id: 1}  # not run again: it had no attempt left


# --- 7. a thousand jobs, three workers, one killed ------------------------------------------


def test_thousand_jobs_survive_a_killed_worker_exactly_once(
    pg_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    total = 1000
    began = time.monotonic()
    stack = make_stack(
        pg_url,
        redis=True,
        DELIVERY_HTTP_ALLOWLIST=scripted_webhook.url,
        # A little more margin than the other tests: three busy processes on two cores must
        # never let a live worker's lease lapse (that would be a second delivery too).
        JOB_LEASE_SECONDS="3",
    ).migrate()
    scripted_webhook.set_default(status=200, delay=0.05)  # keeps a few jobs in flight all the time
    url = scripted_webhook.url + "/bulk"
    with make_session_factory(stack.engine)() as session:
        rows = [
            DeliveryJob(
                prompt=f"job {n}",
                mode="http",
                params=json.dumps({"url": url, "data": {"n": n}}),
                status=jobs.PENDING,
                attempts=0,
                max_attempts=3,
                adapters=[],
                created_at=utcnow(),
            )
            for n in range(total)
        ]
        session.add_all(rows)
        session.commit()
        ids = [row.id for row in rows]
    for job_id in ids:
        stack.queue.enqueue(DELIVER_TASK, job_id)

    workers = [stack.worker(workers=4, label=f"w{n}") for n in (1, 2, 3)]
    owners = [w.wait_consuming(30) for w in workers]
    victim, owner = workers[1], owners[1]

    def count(**where: Any) -> int:
        with Session(stack.engine) as session:
            query = session.query(DeliveryJob)
            for name, value in where.items():
                query = query.filter(getattr(DeliveryJob, name) == value)
            return query.count()

    # Kill it mid-run: after some jobs are done, while it holds running jobs.
    wait_until(
        lambda: count(status="succeeded") >= 200 and count(status="running", lease_owner=owner),
        40,
        stack.explain(),
        interval=0.02,
    )
    victim.kill_hard()
    assert victim.process.returncode == -signal.SIGKILL
    killed_at = time.monotonic()
    held = {
        row.id
        for row in job_rows(stack.engine, ids).values()
        if row.status == "running" and row.lease_owner == owner
    }
    assert held, "the killed worker held no job: nothing was tested"

    finished = stack.wait_finished(ids, timeout=max(60 - (time.monotonic() - began), 15))
    recovered_after = time.monotonic() - killed_at
    explain = stack.explain(held)

    assert all(row.status == "succeeded" for row in finished.values()), explain()
    counts = scripted_webhook.counts()
    assert set(counts) == set(ids)  # everything delivered, nothing foreign
    twice = {job_id for job_id, n in counts.items() if n > 1}
    assert twice <= held, f"delivered more than once without a crash: {twice - held}"
    assert all(counts[job_id] <= 2 for job_id in held)
    assert {finished[job_id].attempts for job_id in held} == {2}, explain()
    others = {job_id: row.attempts for job_id, row in finished.items() if job_id not in held}
    assert set(others.values()) == {1}, {k: v for k, v in others.items() if v != 1}
    for job_id in held:
        assert finished[job_id].last_error is None  # success clears the "worker lost" note
    logged = sum(1 for w in workers for line in w.lines() if line.endswith(": succeeded"))
    assert total - 4 <= logged <= total  # the victim may die between a commit and its log line
    assert all(w.process.poll() is None for w in (workers[0], workers[2]))
    assert recovered_after < 40
    assert time.monotonic() - began < 60


# --- 8. duplicate queue messages ------------------------------------------------------------


@pytest.mark.parametrize("queue", ["sqlite-queue", "redis-queue"])
def test_duplicate_messages_run_a_job_once(
    queue: str, sqlite_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    stack = make_stack(
        sqlite_url, redis=queue == "redis-queue", DELIVERY_HTTP_ALLOWLIST=scripted_webhook.url
    ).migrate()
    url = scripted_webhook.route("/hook", delay=0.3)
    job_id = stack.submit("http", {"url": url})
    stack.queue.enqueue(DELIVER_TASK, job_id)  # three messages for one job before any worker runs
    stack.queue.enqueue(DELIVER_TASK, job_id)
    stack.worker(workers=4)
    stack.wait_finished([job_id])
    wait_until(lambda: stack.queue.backlog() == 0, 10, stack.explain())

    # After it succeeded: two more copies, then a job queued behind them.
    stack.queue.enqueue(DELIVER_TASK, job_id)
    stack.queue.enqueue(DELIVER_TASK, job_id)
    sentinel = stack.submit("http", {"url": url})
    rows = stack.wait_finished([job_id, sentinel])
    wait_until(lambda: stack.queue.backlog() == 0, 10, stack.explain())
    time.sleep(0.5)  # a duplicate still being handled would deliver within this

    assert rows[job_id].status == rows[sentinel].status == "succeeded", stack.explain()()
    assert job(stack.engine, job_id).attempts == 1
    assert scripted_webhook.counts() == {job_id: 1, sentinel: 1}


# --- 9. SIGTERM -------------------------------------------------------------------------------


def test_sigterm_lets_a_running_job_finish(
    db_url: str, make_stack: Callable[..., Stack], scripted_webhook: ScriptedWebhook
) -> None:
    stack = make_stack(
        db_url, DELIVERY_HTTP_ALLOWLIST=scripted_webhook.url, WORKER_SHUTDOWN_TIMEOUT="10"
    )
    stack.migrate()
    url = scripted_webhook.route("/hook", delay=1.5)
    worker = stack.worker()
    job_id = stack.submit("http", {"url": url})
    assert scripted_webhook.wait_for(1, JOB_TIMEOUT), stack.explain([job_id])()
    started = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(10) == 0
    took = time.monotonic() - started

    row = job(stack.engine, job_id)
    assert (row.status, row.attempts) == ("succeeded", 1), stack.explain([job_id])()
    assert 1.0 <= took < 10
    assert worker.saw("stopped cleanly") and not worker.saw("handed")
    assert scripted_webhook.counts() == {job_id: 1}


def test_sigterm_hands_an_unfinished_job_to_another_worker(
    sqlite_url: str, make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    marker = tmp_path / "first-run.pid"
    stack = make_stack(
        sqlite_url, DELIVERY_CLI_COMMAND=TOOL_COMMAND, WORKER_SHUTDOWN_TIMEOUT="1"
    ).migrate()
    first = stack.worker(label="first")
    job_id = stack.submit("cli", prompt=f"once:{marker}")
    command_pid = None
    try:
        stack.wait_status(job_id, "running")
        command_pid = read_pid(marker)
        started = time.monotonic()
        first.send(signal.SIGTERM)
        assert first.wait_exit(10) == 0
        took = time.monotonic() - started

        row = job(stack.engine, job_id)
        assert row.status == "pending", stack.explain([job_id])()
        assert row.attempts == 0  # the cut attempt is not counted
        assert row.lease_owner is None
        assert row.last_error == "worker shut down before the job ended"
        assert took < 1 + 5
        assert first.saw("handed 1 unfinished job(s) back") and first.saw("stopped cleanly")

        second = stack.worker(label="second")
        row = stack.wait_finished([job_id])[job_id]
        assert (row.status, row.attempts) == ("succeeded", 1), stack.explain([job_id])()
        assert result_of(row)["stdout"].startswith(f"echo: once:{marker}")
        assert second.saw(f"job {job_id}: succeeded")
    finally:
        kill_leftover(command_pid)


def test_sigterm_past_the_timeout_also_stops_the_running_commands(
    sqlite_url: str, make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack(
        sqlite_url, DELIVERY_CLI_COMMAND=TOOL_COMMAND, WORKER_SHUTDOWN_TIMEOUT="1"
    ).migrate()
    worker = stack.worker(workers=4)
    pids: list[int] = []
    try:
        ids = []
        for n in range(4):
            pid_file = tmp_path / f"command{n}.pid"
            ids.append(stack.submit("cli", prompt=f"sleep:60:{pid_file}"))
            pids.append(read_pid(pid_file))
            # Commands started apart poll for their stop at different moments: whatever
            # moment the worker exits, some poll would still be ahead.
            time.sleep(0.13)
        worker.send(signal.SIGTERM)
        assert worker.wait_exit(10) == 0
        assert worker.saw("handed 4 unfinished job(s) back")
        assert {row.status for row in job_rows(stack.engine, ids).values()} == {"pending"}
        time.sleep(1.0)
        survivors = [pid for pid in pids if process_alive(pid)]
        assert survivors == [], f"commands still running after the worker exited: {survivors}"
    finally:
        for pid in pids:
            kill_leftover(pid)
