"""Request-scoped dependencies: a database session behind the schema gate."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from lora_manager.core.config import Settings
from lora_manager.core.queue import JobQueue


def db_session(request: Request) -> Iterator[Session]:
    """A session, only once the schema is known to be at head (503 otherwise)."""
    request.app.state.schema_gate.ensure_at_head()
    with request.app.state.session_factory() as session:
        yield session


# The two below are async: no I/O, so no hand-off to a worker thread.
async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def app_queue(request: Request) -> JobQueue:
    """The job queue the app enqueues to (opened on first use)."""
    queue: JobQueue = request.app.state.queue
    return queue
