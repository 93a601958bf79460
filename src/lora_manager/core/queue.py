"""The job queue: Huey on Redis when REDIS_URL is set, else on a SQLite file.

The queue knows no feature: it carries (task name, id) messages, the id naming the row that
describes the work (a delivery job, an embedding run), and that row decides whether the work
runs. Each feature declares its tasks in its `tasks` module; the worker registers them.
Messages are JSON, never pickle: whoever can write to Redis must not be able to run code in a
worker.
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


Handler = Callable[[str], None]


class JobQueue:
    """The app-wide queue of background work: (task name, id) messages. Producers `enqueue`
    a feature's task name and the id of the row that describes the work; a consumer first
    `register`s a handler for each task name it runs (the API only enqueues)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handlers: dict[str, Handler] = {}
        self._huey: Huey | None = None
        self._tasks: dict[str, Any] = {}
        self._lock = threading.RLock()

    @property
    def huey(self) -> Huey:
        """Opened on first use, so building the API creates no queue file."""
        with self._lock:
            if self._huey is None:
                self._huey = make_huey(self.settings)
                for name in self._handlers:
                    self._task(name)
            return self._huey

    def register(self, name: str, handler: Handler) -> None:
        """Run `handler(id)` for each message of task `name` this process consumes."""
        with self._lock:
            if name in self._handlers:
                raise ValueError(f"task {name!r} already has a handler")
            self._handlers[name] = handler
            if self._huey is not None:
                self._task(name)

    def _task(self, name: str) -> Any:
        """The Huey task that carries `name` messages, made once per name. Its function is
        defined here, so the messages' task name stays `lora_manager.core.queue.<name>`."""
        with self._lock:
            task = self._tasks.get(name)
            if task is None:

                def execute(key: str) -> None:
                    self._handlers.get(name, _not_here)(key)

                task = self.huey.task(name=name)(execute)
                self._tasks[name] = task
            return task

    def enqueue(self, name: str, key: str, *, delay: float = 0.0) -> None:
        """Queue task `name` for id `key`, at once or after `delay` seconds; QueueError if
        the queue is unreachable."""
        _send(self._task(name), key, delay)

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


def _not_here(key: str) -> None:
    raise RuntimeError(f"{key} reached a queue with no worker attached")
