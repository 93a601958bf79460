"""The deliveries' background work on the job queue: one task, `deliver`, whose id is a
delivery job's; the job's row decides whether it runs (see `runner`)."""

from __future__ import annotations

from collections.abc import Callable

from lora_manager.core.queue import JobQueue
from lora_manager.deliveries.runner import JobRunner

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
