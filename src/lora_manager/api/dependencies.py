"""Request-scoped dependencies: a database session behind the schema gate."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session


def db_session(request: Request) -> Iterator[Session]:
    """A session, only once the schema is known to be at head (503 otherwise)."""
    request.app.state.schema_gate.ensure_at_head()
    with request.app.state.session_factory() as session:
        yield session
