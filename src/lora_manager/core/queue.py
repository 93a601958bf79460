"""The job queue: Huey on Redis when REDIS_URL is set, else on a SQLite file.

The queue carries job ids only; the `deliveryjob` row decides whether a job runs (see
`repository`). Messages are JSON, never pickle: whoever can write to Redis must not be able to
run code in a worker.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from huey import Huey, RedisHuey, SqliteHuey
from huey.registry import Message
from huey.serializer import Serializer

from lora_manager.core.config import Settings
from lora_manager.core.errors import UnavailableError

log = logging.getLogger(__name__)

QUEUE_NAME = "lora-manager"
TASK_NAME = "deliver"
EMBED_TASK_NAME = "embed"
_TIMES = ("eta", "expires_resolved")


class QueueError(UnavailableError):
    """The queue could not be reached or its message could not be read."""


class JsonSerializer(Serializer):
    """Huey messages as JSON: plain fields, times as ISO text, no nested tasks."""

    def _serialize(self, data: Any) -> bytes:
        if not isinstance(data, Message):
            raise QueueError(f"only task messages are queued, not {type(data).__name__}")
        fields = data._asdict()
        if fields.get("on_complete") or fields.get("on_error") or fields.get("chord_config"):
            raise QueueError("pipelines and chords are not used by LoRA Manager")
        for name in _TIMES:
            if isinstance(fields.get(name), datetime):
                fields[name] = fields[name].isoformat()
        return json.dumps(fields, separators=(",", ":")).encode("utf-8")

    def _deserialize(self, data: bytes) -> Any:
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict):
                raise ValueError("not an object")
            for name in _TIMES:
                if fields.get(name):
                    fields[name] = datetime.fromisoformat(fields[name])
            fields["args"] = tuple(fields.get("args") or ())
            return Message(**{key: fields.get(key) for key in Message._fields})
        except (ValueError, TypeError) as exc:
            raise QueueError(f"unreadable queue message: {exc}") from None


class _NoRevokes:
    """LoRA Manager cancels through the job's row, never by revoking tasks: skip Huey's
    revocation lookup, one queue round trip per task."""

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        return False


class _RedisQueue(_NoRevokes, RedisHuey):
    pass


class _SqliteQueue(_NoRevokes, SqliteHuey):
    pass


def make_huey(settings: Settings) -> Huey:
    serializer = JsonSerializer()
    if settings.redis_url:
        return _RedisQueue(
            QUEUE_NAME, url=settings.redis_url, results=False, serializer=serializer, utc=True
        )
    path = settings.queue_file
    path.parent.mkdir(parents=True, exist_ok=True)
    return _SqliteQueue(
        QUEUE_NAME, filename=str(path), results=False, serializer=serializer, utc=True
    )


def describe(settings: Settings) -> str:
    """Where the queue lives, without credentials."""
    if settings.redis_url:
        parts = urlsplit(settings.redis_url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"Redis ({parts.scheme}://{host}{port}{parts.path})"
    return f"SQLite ({settings.queue_file})"


class DeliveryQueue:
    """The job queue: delivery job ids, and embedding run ids. A worker passes `run` and
    `embed` to execute them; the API only enqueues."""

    def __init__(
        self,
        settings: Settings,
        run: Callable[[str], None] | None = None,
        embed: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._run = run or _not_here
        self._embed = embed or _not_here
        self._huey: Huey | None = None
        self._task: Any = None
        self._embed_task: Any = None
        self._lock = threading.Lock()

    @property
    def huey(self) -> Huey:
        """Opened on first use, so building the API creates no queue file."""
        with self._lock:
            if self._huey is None:
                self._huey = make_huey(self.settings)
                self._task = self._huey.task(name=TASK_NAME)(self._execute)
                self._embed_task = self._huey.task(name=EMBED_TASK_NAME)(self._execute_embed)
            return self._huey

    @property
    def task(self) -> Any:
        self.huey  # noqa: B018 — opens the queue and registers the task
        return self._task

    def _execute(self, job_id: str) -> None:
        self._run(job_id)

    def _execute_embed(self, run_id: str) -> None:
        self._embed(run_id)

    def enqueue_embedding(self, run_id: str) -> None:
        """Queue an embedding run; QueueError if the queue is unreachable."""
        self.huey  # noqa: B018 — opens the queue and registers the tasks
        _send(self._embed_task, run_id, 0.0)

    def enqueue(self, job_id: str, *, delay: float = 0.0) -> None:
        """Queue a job id, at once or after `delay` seconds; QueueError if unreachable."""
        _send(self.task, job_id, delay)

    def backlog(self) -> int:
        """Messages waiting to be taken (not the scheduled retries)."""
        return int(self.huey.pending_count())

    def close(self) -> None:
        if self._huey is None:
            return
        storage = self._huey.storage
        close = getattr(storage, "close", None)
        if close is not None:
            close()


def _send(task: Any, key: str, delay: float) -> None:
    """Put one id on the queue through a registered task, at once or after `delay` seconds."""
    try:
        if delay > 0:
            task.schedule((key,), delay=delay)
        else:
            task(key)
    except QueueError:
        raise
    except Exception as exc:  # redis and sqlite3 raise their own kinds
        raise QueueError(f"queue unreachable ({type(exc).__name__})") from None


def _not_here(job_id: str) -> None:
    raise RuntimeError(f"job {job_id} reached a queue with no worker attached")
