"""Knows whether the database schema is at head, so no request ever meets a missing column."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from lora_manager.db import short_error
from lora_manager.errors import DatabaseUnreachableError, SchemaNotAtHeadError
from lora_manager.migrations import SchemaStatus, schema_status


class SchemaGate:
    """Checks the schema revision, trusting a good answer for `ttl` seconds."""

    def __init__(self, engine: Engine, ttl: float) -> None:
        self.engine = engine
        self.ttl = ttl
        self._ok_until = 0.0
        self._lock = threading.Lock()

    def status(self) -> SchemaStatus:
        """A fresh answer; raises DatabaseUnreachableError when the database does not answer."""
        try:
            with self.engine.connect() as connection:
                return schema_status(connection)
        except SQLAlchemyError as exc:
            self.invalidate()
            raise DatabaseUnreachableError(f"database unreachable: {short_error(exc)}") from None

    def ensure_at_head(self) -> None:
        if time.monotonic() < self._ok_until:
            return
        with self._lock:
            if time.monotonic() < self._ok_until:
                return
            status = self.status()
            if not status.at_head:
                raise SchemaNotAtHeadError(status.describe())
            self._ok_until = time.monotonic() + self.ttl

    def invalidate(self) -> None:
        self._ok_until = 0.0
