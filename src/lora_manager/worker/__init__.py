"""The worker process: waits for the database and for the schema to reach head, then
consumes the job queue (every feature's tasks, see `consumer`) until SIGTERM or SIGINT,
letting running jobs finish."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from lora_manager.core.config import Settings
from lora_manager.core.errors import DatabaseUnreachableError
from lora_manager.core.migrations import MigrationRunner
from lora_manager.worker.consumer import QueueConsumer

log = logging.getLogger(__name__)

SCHEMA_POLL_INTERVAL = 1.0
HEALTH_CHECK_INTERVAL = 5.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        echo: Callable[[str], None] | None = None,
        threads: int | None = None,
    ) -> None:
        self.settings = settings
        self.threads = threads or settings.worker_threads
        self.echo = echo or log.info
        self.stopping = threading.Event()

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: object) -> None:
            self.echo(f"worker: received {signal.Signals(signum).name}, shutting down")
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def wait_for_schema(self) -> bool:
        """Block until the schema is at head; False if asked to stop first."""
        runner = MigrationRunner(self.settings, echo=self.echo)
        runner.wait()
        last_reported = ""
        while not self.stopping.is_set():
            try:
                status = runner.status()
            except DatabaseUnreachableError as exc:
                message = str(exc)
            else:
                if status.at_head:
                    return True
                message = status.describe()
            if message != last_reported:
                self.echo(f"worker: waiting for the schema before consuming ({message})")
                last_reported = message
            self.stopping.wait(SCHEMA_POLL_INTERVAL)
        return False

    def run(self) -> int:
        self.echo("worker: starting")
        if not self.wait_for_schema():
            self.echo("worker: stopped before the schema reached head")
            return 0
        self.echo("worker: schema at head, consuming")
        consumer = QueueConsumer(self.settings, self.threads, echo=self.echo)
        consumer.start()
        while not self.stopping.wait(HEALTH_CHECK_INTERVAL):
            consumer.check_health()
        self.echo("worker: finishing running jobs")
        consumer.stop()
        self.echo("worker: stopped cleanly")
        return 0
