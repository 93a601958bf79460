"""The deliveries' background work on the job queue: one task, `deliver`, whose id is a
delivery job's; the job's row decides whether it runs (see `runner`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.engine import Engine

from lora_manager.core.queue import JobQueue
from lora_manager.deliveries import repository as jobs
from lora_manager.deliveries.runner import JobRunner

log = logging.getLogger(__name__)

DELIVER_TASK = "deliver"


def enqueue_delivery(queue: JobQueue, job_id: str, *, delay: float = 0.0) -> None:
    """Queue a delivery job's id, at once or after `delay` seconds; QueueError if the queue
    is unreachable."""
    queue.enqueue(DELIVER_TASK, job_id, delay=delay)


def deliver_task(runner: JobRunner, queue: JobQueue) -> Callable[[str], None]:
    """The handler of DELIVER_TASK in a worker: the runner runs the job under a lease, and
    queues a transient failure's retry on `queue`."""
    runner.enqueue = lambda job_id, delay: enqueue_delivery(queue, job_id, delay=delay)
    return runner.run


def release_expired_leases(engine: Engine) -> list[str]:
    """Jobs whose worker died (lease expired): back to pending, or ended when cancelled or out
    of attempts. Returns the ids to queue again."""
    pending = []
    for job_id, attempts, limit, cancel in jobs.expired_leases(engine):
        error = f"worker lost: lease expired during attempt {attempts} of {limit}"
        if cancel:
            status = jobs.CANCELLED
        elif attempts >= limit:
            status = jobs.FAILED
        else:
            status = jobs.PENDING
        if jobs.release_expired(engine, job_id, status=status, error=error):
            log.warning("job %s: %s; now %s", job_id, error, status)
            if status == jobs.PENDING:
                pending.append(job_id)
    return pending


def overdue_jobs(engine: Engine, after: float) -> list[str]:
    """Pending jobs due for longer than `after` seconds: their message was lost."""
    return list(jobs.overdue_pending(engine, after))


def hand_back(engine: Engine, owner: str) -> list[str]:
    """A stopping worker's running jobs, back to pending; returns their ids to queue again."""
    return list(jobs.release_owned(engine, owner))
