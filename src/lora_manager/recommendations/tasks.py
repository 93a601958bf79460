"""The recommendations' background work on the job queue: one task, `embed`, whose id is an
embedding run's (see `embedding.run_embedding`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy.engine import Engine

from lora_manager.core.config import Settings
from lora_manager.core.db import make_session_factory
from lora_manager.core.queue import JobQueue
from lora_manager.recommendations import repository
from lora_manager.recommendations.embedders import Embedder, make_embedder
from lora_manager.recommendations.embedding import run_embedding

EMBED_TASK = "embed"


def enqueue_embedding(queue: JobQueue, run_id: str) -> None:
    """Queue an embedding run; QueueError if the queue is unreachable."""
    queue.enqueue(EMBED_TASK, run_id)


def embed_task(settings: Settings, engine: Engine) -> Callable[[str], None]:
    """The handler of EMBED_TASK in a worker: carries out an embedding run; the embedder
    loads once per process, on the first run."""
    embedder: list[Embedder] = []
    lock = threading.Lock()

    def embed(run_id: str) -> None:
        with lock:
            if not embedder:
                embedder.append(make_embedder(settings.recommendation_embedder))
        run_embedding(make_session_factory(engine), embedder[0], run_id)

    return embed


def stalled_runs(engine: Engine, after: float) -> list[str]:
    """Embedding runs whose worker stopped (no heartbeat for `after` seconds), released to be
    queued again."""
    return list(repository.release_stalled_runs(engine, after))


def overdue_runs(engine: Engine, after: float) -> list[str]:
    """Pending embedding runs older than `after` seconds: their message was lost."""
    return list(repository.overdue_runs(engine, after))
