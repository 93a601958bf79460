"""Run one delivery job under a lease: claim it, call its back end, record how it ended.

A job is claimed by one conditional UPDATE (pending → running, attempts + 1, lease to this
process), so a duplicate message or a second worker finds nothing to do. While it runs, the
consumer's lease keeper renews the lease and passes on cancel requests; the job ends with an
UPDATE that only matches while this process still holds the lease, so a worker that lost its
lease (it stalled past the expiry and the job went to another) cannot overwrite the outcome.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from lora_manager.core.config import Settings
from lora_manager.core.db import short_error
from lora_manager.core.models import utcnow
from lora_manager.deliveries import repository as jobs
from lora_manager.deliveries.backends import BACKENDS
from lora_manager.deliveries.backends.base import (
    DeliveryContext,
    DeliveryError,
    DeliveryRequest,
    DeliveryResult,
)

log = logging.getLogger(__name__)

Enqueue = Callable[[str, float], None]


T = TypeVar("T")
# A busy SQLite file or a PostgreSQL fail-over must not turn a finished job into a rerun.
DB_TRIES = 5


def with_db_retries(what: str, action: Callable[[], T]) -> T:
    """Run a short database write, again after a pause if the database was briefly away."""
    for attempt in range(1, DB_TRIES + 1):
        try:
            return action()
        except OperationalError as exc:
            if attempt == DB_TRIES:
                raise
            log.warning("%s: database busy or away (%s); trying again", what, short_error(exc))
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def make_owner() -> str:
    """This process's lease name: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


def retry_delay(settings: Settings, attempts: int) -> float:
    """Exponential backoff: the first retry after JOB_RETRY_DELAY, doubling, capped."""
    return min(settings.job_retry_delay * 2.0 ** max(attempts - 1, 0), settings.job_retry_max_delay)


def request_for(row: dict[str, Any]) -> DeliveryRequest:
    """The back end's request from a job row (its params as the mode's check accepted them)."""
    return DeliveryRequest(
        job_id=row["id"],
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"],
        adapters=list(row["adapters"] or []),
        params=json.loads(row["params"]) if row["params"] else {},
    )


class JobRunner:
    """Executes jobs for one process; thread-safe (Huey runs it from several threads)."""

    def __init__(self, settings: Settings, engine: Engine, owner: str | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.owner = owner or make_owner()
        self.enqueue: Enqueue | None = None
        self._held: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        # One connection pool for every webhook this process sends.
        self.http = httpx.Client(
            timeout=settings.delivery_http_timeout, follow_redirects=False, trust_env=False
        )

    # -- what the lease keeper needs -------------------------------------------------------

    def held(self) -> dict[str, threading.Event]:
        with self._lock:
            return dict(self._held)

    def keep_leases(self) -> None:
        """Renew this process's leases; stop the jobs asked to cancel or taken from us."""
        if not self.held():
            return
        running, cancels = jobs.renew_leases(
            self.engine, self.owner, self.settings.job_lease_seconds
        )
        for job_id, stop in self.held().items():
            if job_id in cancels or job_id not in running:
                stop.set()

    def stop_all(self) -> None:
        for stop in self.held().values():
            stop.set()

    def close(self) -> None:
        self.http.close()

    # -- one job ---------------------------------------------------------------------------

    def run(self, job_id: str) -> None:
        lease = self.settings.job_lease_seconds
        row = with_db_retries(
            f"job {job_id}", lambda: jobs.claim(self.engine, job_id, self.owner, lease)
        )
        if row is None:
            log.debug("job %s: not pending or not due, nothing to do", job_id)
            return
        stop = threading.Event()
        with self._lock:
            self._held[job_id] = stop
        try:
            self._run_claimed(row, stop)
        finally:
            with self._lock:
                self._held.pop(job_id, None)

    def _run_claimed(self, row: dict[str, Any], stop: threading.Event) -> None:
        job_id = row["id"]
        try:
            result = self._deliver(row, stop)
        except DeliveryError as exc:
            self._failed(row, exc, stop)
        except Exception as exc:  # a bug must end the job, not the worker
            log.exception("job %s: unexpected error", job_id)
            self._end(job_id, jobs.FAILED, None, f"internal error: {type(exc).__name__}")
        else:
            self._end(job_id, jobs.SUCCEEDED, json.dumps(result.summary), None)

    def _deliver(self, row: dict[str, Any], stop: threading.Event) -> DeliveryResult:
        backend = BACKENDS.get(row["mode"])
        if backend is None:
            raise DeliveryError(f"unknown mode {row['mode']!r}", transient=False)
        request = request_for(row)

        def progress(value: float) -> None:
            jobs.set_progress(self.engine, request.job_id, self.owner, value)

        context = DeliveryContext(cancel=stop.is_set, on_progress=progress, http=self.http)
        return backend.deliver(self.settings, request, context)

    def _failed(self, row: dict[str, Any], exc: DeliveryError, stop: threading.Event) -> None:
        job_id = row["id"]
        detail = json.dumps(exc.detail) if exc.detail else None
        if stop.is_set():
            self._end(job_id, jobs.CANCELLED, detail, "cancelled while running")
            return
        attempts, limit = row["attempts"], row["max_attempts"]
        if exc.transient and attempts < limit:
            delay = retry_delay(self.settings, attempts)
            due = utcnow() + timedelta(seconds=delay)
            error = f"{exc.message} (attempt {attempts} of {limit}; retrying in {delay:g} s)"
            postponed = with_db_retries(
                f"job {job_id}",
                lambda: jobs.postpone(self.engine, job_id, self.owner, error=error, due=due),
            )
            if postponed:
                log.info("job %s: %s", job_id, error)
                self._requeue(job_id, delay)
            return
        suffix = f" (attempt {attempts} of {limit})" if exc.transient else ""
        self._end(job_id, jobs.FAILED, detail, exc.message + suffix)

    def _end(self, job_id: str, status: str, result: str | None, error: str | None) -> None:
        ended = with_db_retries(
            f"job {job_id}",
            lambda: jobs.finish(
                self.engine, job_id, self.owner, status=status, result=result, error=error
            ),
        )
        if ended:
            log.info("job %s: %s", job_id, status)
        else:
            log.warning("job %s: lease lost before it ended; its outcome was dropped", job_id)

    def _requeue(self, job_id: str, delay: float) -> None:
        if self.enqueue is None:
            return
        try:
            self.enqueue(job_id, delay)
        except Exception as exc:  # the sweeper queues it again later
            log.warning("job %s: could not queue the retry (%s); the sweeper will", job_id, exc)
