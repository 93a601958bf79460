"""A queue consumer: Huey's worker threads running every feature's tasks, plus this process's
lease keeper and the sweeper that gives a dead worker's jobs (and jobs whose message was lost)
back to the queue. The one place that registers the features' tasks (`register_tasks`).

Used by `lora-manager worker` (its own process) and by `lora-manager serve` on the embedded
default (inside the API process). The caller handles signals; `stop()` shuts down gracefully.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from huey import Huey
from huey.consumer import Consumer
from sqlalchemy.engine import Engine

from lora_manager.core import queue as job_queue
from lora_manager.core.config import Settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.deliveries import tasks as deliveries
from lora_manager.deliveries.runner import JobRunner
from lora_manager.deliveries.tasks import DELIVER_TASK, deliver_task, enqueue_delivery
from lora_manager.recommendations import tasks as recommendations
from lora_manager.recommendations.service import queue_if_stale
from lora_manager.recommendations.tasks import EMBED_TASK, embed_task, enqueue_embedding

log = logging.getLogger(__name__)
T = TypeVar("T")

# Longest pause between two polls of an idle SQLite queue (Redis blocks instead of polling).
MAX_POLL_DELAY = 0.5
# How often running jobs are checked for cancel requests (leases renew at a third of theirs).
KEEPER_TICK = 1.0
# How long stopped jobs get to wind down (kill their command) after the shutdown timeout.
STOP_GRACE = 5.0
# While the queue is away: the first retry after this long, doubling up to the second.
FIRST_QUEUE_RETRY = 0.5
MAX_QUEUE_RETRY = 10.0


class QueueWatch:
    """Notices the queue going away and coming back: one line each (the reason, no traceback,
    no password), and while it is away one retry schedule for every thread, its pause doubling
    from FIRST_QUEUE_RETRY to MAX_QUEUE_RETRY, instead of a traceback per thread and poll."""

    def __init__(self, settings: Settings) -> None:
        self.where = job_queue.describe(settings)
        self._secrets = [s for s in (_password(settings.redis_url),) if s]
        self._lock = threading.Lock()
        self._lost_at: float | None = None
        self._pause = FIRST_QUEUE_RETRY
        self._next_try = 0.0

    @property
    def lost(self) -> bool:
        return self._lost_at is not None

    def due(self) -> float:
        """Seconds until the next try of a lost queue may start (0: now)."""
        with self._lock:
            return 0.0 if self._lost_at is None else max(0.0, self._next_try - time.monotonic())

    def wait_turn(self, stop: Any) -> bool:
        """Wait (interruptibly, on the `stop` event) until the queue may be tried; False if
        stopped meanwhile."""
        pause = self.due()
        return not (pause and stop.wait(pause))

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            if self._lost_at is None:
                self._lost_at = now
                self._pause = FIRST_QUEUE_RETRY
                log.warning(
                    "queue lost: %s: %s; retrying in %g s, backing off to every %g s",
                    self.where,
                    self._reason(exc),
                    FIRST_QUEUE_RETRY,
                    MAX_QUEUE_RETRY,
                )
            elif now >= self._next_try:  # this failure was the scheduled retry
                self._pause = min(self._pause * 2, MAX_QUEUE_RETRY)
            else:
                return  # another thread's try of this round already failed
            self._next_try = now + self._pause

    def guarded(self, call: Callable[[], T], fallback: T) -> T:
        """`call()`, its failure reported here and answered with `fallback`."""
        try:
            result = call()
        except Exception as exc:  # redis and sqlite3 raise their own kinds
            self.failed(exc)
            return fallback
        self.succeeded()
        return result

    def succeeded(self) -> None:
        if self._lost_at is None:  # the common case, without the lock
            return
        with self._lock:
            if self._lost_at is not None:
                log.warning(
                    "queue back: %s, after %.1f s", self.where, time.monotonic() - self._lost_at
                )
                self._lost_at = None

    def _reason(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or "no detail"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return f"{type(exc).__name__}: {text}"[:300]


def _password(url: str | None) -> str | None:
    from urllib.parse import urlsplit

    return urlsplit(url).password if url else None


class _WatchedQueue:
    """The queue as Huey's worker and scheduler threads see it: a failing read or write is
    reported to the watch and answered with "nothing", and reads wait their turn while the
    queue is away. Everything else goes to the real Huey."""

    def __init__(self, huey: Huey, watch: QueueWatch, stop: Any) -> None:
        self._huey = huey
        self._watch = watch
        self._stop = stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._huey, name)

    def dequeue(self) -> Any:
        if not self._watch.wait_turn(self._stop):
            return None
        return self._watch.guarded(self._huey.dequeue, None)

    def read_schedule(self, now: Any = None) -> list[Any]:
        if self._watch.due():  # the scheduler has its own interval: skip rather than wait
            return []
        return self._watch.guarded(lambda: list(self._huey.read_schedule(now)), [])

    def enqueue(self, task: Any) -> Any:
        try:
            return self._huey.enqueue(task)
        except Exception as exc:
            self._watch.failed(exc)
            log.warning("a retry's message was lost with the queue; the sweeper queues it again")
            return None


class _QuietConsumer(Consumer):
    """Huey's consumer without its signal handlers (the process owner installs its own), its
    threads reading the queue through a QueueWatch."""

    def __init__(self, huey: Huey, watch: QueueWatch, **options: Any) -> None:
        self.watch = watch
        super().__init__(huey, **options)

    def _set_signal_handlers(self) -> None:
        pass

    def _create_worker(self) -> Any:
        worker = super()._create_worker()
        worker.huey = _WatchedQueue(self.huey, self.watch, self.stop_flag)
        return worker

    def _create_scheduler(self) -> Any:
        scheduler = super()._create_scheduler()
        scheduler.huey = _WatchedQueue(self.huey, self.watch, self.stop_flag)
        return scheduler


def register_tasks(
    queue: job_queue.JobQueue, settings: Settings, engine: Engine, runner: JobRunner
) -> None:
    """Every feature's background tasks, with the handlers this process runs them with."""
    queue.register(DELIVER_TASK, deliver_task(runner, queue))
    queue.register(EMBED_TASK, embed_task(settings, engine))


class QueueConsumer:
    def __init__(
        self, settings: Settings, threads: int, echo: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self.echo = echo or log.info
        # Huey logs every task at INFO; the runner logs each job's outcome instead.
        logging.getLogger("huey").setLevel(max(logging.WARNING, logging.getLogger().level))
        # No ping per checkout: the runner retries a statement whose connection dropped.
        self.engine = make_engine(settings, sqlite_writer=True, pre_ping=False)
        self.runner = JobRunner(settings, self.engine)
        self.queue = job_queue.JobQueue(settings)
        register_tasks(self.queue, settings, self.engine, self.runner)
        self.threads = threads
        self._stopping = threading.Event()
        self.watch = QueueWatch(settings)
        self._huey = _QuietConsumer(
            self.queue.huey,
            self.watch,
            workers=threads,
            worker_type="thread",
            periodic=False,
            initial_delay=0.05,
            max_delay=MAX_POLL_DELAY,
            check_worker_health=True,
        )
        self._background = [
            threading.Thread(target=self._keep_leases, name="lease-keeper", daemon=True),
            threading.Thread(target=self._sweep, name="lease-sweeper", daemon=True),
        ]

    def start(self) -> None:
        # Before consuming, so "thread(s) as" in the log means the check is done.
        try:
            queued = queue_if_stale(make_session_factory(self.engine), self.settings)
        except Exception as exc:  # the next import or a recompute catches up
            log.warning("could not check the embeddings: %s", exc)
        else:
            if queued is not None:
                self.echo(f"worker: some adapters lack current embeddings; run {queued} queued")
        self.echo(
            f"worker: queue {job_queue.describe(self.settings)}, {self.threads} "
            f"thread(s) as {self.runner.owner}"
        )
        self._huey.start()
        for thread in self._background:
            thread.start()

    def check_health(self) -> None:
        """Restart a Huey worker thread that died (call now and then from the owner's loop)."""
        self._huey.check_worker_health()

    def stop(self) -> None:
        """Let running jobs finish (up to WORKER_SHUTDOWN_TIMEOUT), then hand back the rest."""
        self._huey.shutdown_timeout = self.settings.worker_shutdown_timeout
        self._huey.stop(graceful=True)
        still = list(self.runner.held())
        if still:
            released = deliveries.hand_back(self.engine, self.runner.owner)
            self.runner.stop_all()
            # Let the back ends see the stop (a local command is killed) before we exit.
            deadline = time.monotonic() + STOP_GRACE
            while self.runner.held() and time.monotonic() < deadline:
                time.sleep(0.05)
            for job_id in released:
                self._enqueue_quietly(job_id)
            self.echo(f"worker: handed {len(released)} unfinished job(s) back to the queue")
        self._stopping.set()
        for thread in self._background:
            if thread.is_alive():
                thread.join(timeout=5)
        self.runner.close()
        self.queue.close()
        self.engine.dispose()

    # -- background loops ------------------------------------------------------------------

    def _keep_leases(self) -> None:
        while not self._stopping.wait(min(KEEPER_TICK, self.settings.job_lease_seconds / 3)):
            try:
                self.runner.keep_leases()
            except Exception as exc:  # the database may be briefly away
                log.warning("lease keeper: %s", exc)

    def _sweep(self) -> None:
        while not self._stopping.wait(self.settings.job_sweep_interval):
            try:
                self.sweep()
            except Exception as exc:  # try again next round
                log.warning("sweeper: %s", exc)

    def sweep(self) -> int:
        """One round: expired leases back to pending (or ended), stalled embedding runs taken up
        again, lost messages queued again."""
        requeued = 0
        for job_id in deliveries.release_expired_leases(self.engine):
            requeued += self._enqueue_quietly(job_id)
        for run_id in recommendations.stalled_runs(self.engine, self._stalled_after):
            log.warning("embedding run %s: its worker stopped; queued again", run_id)
            requeued += self._enqueue_run_quietly(run_id)
        # While the queue is away its consumer threads' retries notice it is back.
        backlog = None if self.watch.due() else self.watch.guarded(self.queue.backlog, None)
        if backlog == 0:
            for job_id in deliveries.overdue_jobs(self.engine, self.settings.job_requeue_after):
                requeued += self._enqueue_quietly(job_id)
            for run_id in recommendations.overdue_runs(
                self.engine, self.settings.job_requeue_after
            ):
                requeued += self._enqueue_run_quietly(run_id)
        return requeued

    @property
    def _stalled_after(self) -> float:
        # An embedding batch can take a while on the semantic model: allow ten leases.
        return max(10 * self.settings.job_lease_seconds, 60.0)

    def _enqueue_quietly(self, job_id: str) -> int:
        return int(self._send_quietly(lambda key: enqueue_delivery(self.queue, key), "job", job_id))

    def _enqueue_run_quietly(self, run_id: str) -> int:
        return int(
            self._send_quietly(
                lambda key: enqueue_embedding(self.queue, key), "embedding run", run_id
            )
        )

    def _send_quietly(self, enqueue: Callable[[str], None], what: str, key: str) -> bool:
        """Queue an id; if the queue is away, say so once (the watch): the next sweep tries
        again."""
        try:
            enqueue(key)
        except job_queue.QueueError as exc:
            if self.watch.lost:
                log.debug("%s %s: %s; will try again", what, key, exc)
            else:
                log.warning("%s %s: %s; will try again", what, key, exc)
            return False
        return True
