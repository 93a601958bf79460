"""Real `lora-manager worker` processes for tests, and bounded waits on delivery-job rows.

A worker runs through `processes.background` (its own session, SIGTERM then SIGKILL on exit);
its stdout and stderr are drained by threads into memory, so a chatty worker never blocks on a
full pipe and a failing test can show what each worker said.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Engine

from lora_manager.core.models import DeliveryJob
from tests.support.processes import background

T = TypeVar("T")

_OWNER = re.compile(r"worker: queue .* thread\(s\) as (\S+)\s*$")
# The worker's settings that tests set; anything inherited under these names is dropped first.
SETTING_NAMES = (
    "DATABASE_URL",
    "REDIS_URL",
    "QUEUE_PATH",
    "WORKER_THREADS",
    "JOB_LEASE_SECONDS",
    "JOB_SWEEP_INTERVAL",
    "JOB_REQUEUE_AFTER",
    "JOB_RETRY_DELAY",
    "JOB_RETRY_MAX_DELAY",
    "JOB_MAX_ATTEMPTS",
    "WORKER_SHUTDOWN_TIMEOUT",
    "DELIVERY_HTTP_ALLOWLIST",
    "DELIVERY_HTTP_TIMEOUT",
    "DELIVERY_CLI_COMMAND",
    "DELIVERY_CLI_PROMPT_VIA",
    "DELIVERY_CLI_END_OF_OPTIONS",
    "DELIVERY_CLI_TIMEOUT",
    "SDNEXT_URL",
    "SDNEXT_USERNAME",
    "SDNEXT_PASSWORD",
    "SDNEXT_TIMEOUT",
    "SDNEXT_DEFAULTS",
    "RESULTS_DIR",
    "LOG_LEVEL",
    "API_KEY",
    "IN_PROCESS_WORKER",
)


def worker_env(base: dict[str, str], **settings: Any) -> dict[str, str]:
    """`base` (e.g. the `cli_env` fixture) without inherited settings, plus `settings`
    (keyword names are the env variables; None leaves a variable unset)."""
    env = {k: v for k, v in base.items() if k.upper() not in SETTING_NAMES}
    env.update({k.upper(): str(v) for k, v in settings.items() if v is not None})
    return env


def with_settings(env: dict[str, str], **changes: Any) -> dict[str, str]:
    """A copy of a worker's `env` with some settings changed (None unsets one)."""
    updated = dict(env)
    for name, value in changes.items():
        updated.pop(name.upper(), None)
        if value is not None:
            updated[name.upper()] = str(value)
    return updated


class WorkerProcess:
    """One running `lora-manager worker`; what it printed so far is in `lines()`."""

    def __init__(self, process: subprocess.Popen[str], label: str) -> None:
        self.process = process
        self.label = label
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._drain, args=(stream,), daemon=True)
            for stream in (process.stdout, process.stderr)
            if stream is not None
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed under us at the very end
            for line in stream:
                with self._lock:
                    self._lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def output(self, tail: int = 80) -> str:
        lines = self.lines()
        shown = lines[-tail:]
        skipped = f"  … {len(lines) - len(shown)} earlier line(s)\n" if len(lines) > tail else ""
        code = self.process.poll()
        state = "running" if code is None else f"exited {code}"
        body = "\n".join(f"  {line}" for line in shown)
        return f"--- worker {self.label} (pid {self.pid}, {state}) ---\n{skipped}{body}"

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines())

    def wait_for_line(self, text: str, timeout: float) -> str:
        """The first line containing `text`; fails with the output if none comes in time."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                if text in line:
                    return line
            if self.process.poll() is not None:
                self.join_readers()
                for line in self.lines():
                    if text in line:
                        return line
                raise AssertionError(f"worker exited before printing {text!r}\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"worker did not print {text!r} within {timeout}s\n{self.output()}"
                )
            time.sleep(0.05)

    def wait_consuming(self, timeout: float = 30.0) -> str:
        """Wait until the worker consumes the queue; returns its lease owner name."""
        line = self.wait_for_line("thread(s) as ", timeout)
        match = _OWNER.search(line)
        assert match, line
        return match.group(1)

    @property
    def owner(self) -> str | None:
        for line in self.lines():
            match = _OWNER.search(line)
            if match:
                return match.group(1)
        return None

    def send(self, signum: int) -> None:
        """Signal the worker process itself (not its job's commands)."""
        self.process.send_signal(signum)

    def kill_hard(self) -> None:
        """SIGKILL the worker's whole process group (its running commands die with it)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running {timeout}s later\n{self.output()}"
            ) from None
        self.join_readers()
        return code

    def join_readers(self, timeout: float = 5.0) -> None:
        for reader in self._readers:
            reader.join(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL of the group if it lingers; readers drained."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(5)
        self.join_readers()


@contextlib.contextmanager
def running_worker(
    env: dict[str, str], *, workers: int = 2, label: str = "w"
) -> Iterator[WorkerProcess]:
    """`lora-manager worker --workers N`; stopped (and its output drained) on exit."""
    argv = ["lora-manager", "worker", "--workers", str(workers)]
    with background(argv, env) as process:
        worker = WorkerProcess(process, label)
        try:
            yield worker
        finally:
            worker.stop()


# --- the rows ---------------------------------------------------------------------------------


def job_rows(engine: Engine, ids: Iterable[str] | None = None) -> dict[str, DeliveryJob]:
    """Fresh copies of the rows (all, or those with `ids`), by id."""
    from sqlalchemy.orm import Session

    query = select(DeliveryJob)
    if ids is not None:
        query = query.where(DeliveryJob.id.in_(list(ids)))
    with Session(engine, expire_on_commit=False) as session:
        rows = list(session.scalars(query))
        session.expunge_all()
    return {row.id: row for row in rows}


def job(engine: Engine, job_id: str) -> DeliveryJob:
    rows = job_rows(engine, [job_id])
    assert job_id in rows, f"no job {job_id}"
    return rows[job_id]


def describe_jobs(engine: Engine, ids: Iterable[str] | None = None, limit: int = 25) -> str:
    try:
        rows = list(job_rows(engine, ids).values())
    except Exception as exc:  # the report must not hide the original failure
        return f"(could not read the jobs: {type(exc).__name__}: {exc})"
    counts = Counter(row.status for row in rows)
    lines = [f"jobs by status: {dict(counts)}"]
    unfinished = [row for row in rows if row.status != "succeeded"] or rows
    for row in unfinished[:limit]:
        lines.append(
            f"  {row.id} {row.mode} {row.status} attempts={row.attempts}/{row.max_attempts} "
            f"owner={row.lease_owner} lease={row.lease_expires_at} "
            f"next={row.next_attempt_at} cancel={row.cancel_requested} "
            f"error={row.last_error!r}"
        )
    if len(unfinished) > limit:
        lines.append(f"  … {len(unfinished) - limit} more")
    return "\n".join(lines)


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    explain: Callable[[], str],
    interval: float = 0.1,
) -> T:
    """Poll `condition` until it returns something true; fail with `explain()` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s\n{explain()}")
        time.sleep(interval)
