"""Knows whether the database schema is at head, so no request ever meets a missing column."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from lora_manager.core.background import start_in_background
from lora_manager.core.db import short_error
from lora_manager.core.errors import DatabaseUnreachableError, SchemaNotAtHeadError
from lora_manager.core.migrations import SchemaStatus, schema_status


class SchemaGate:
    """Checks the schema revision, trusting a good answer for `ttl` seconds.

    Once the schema has been seen at head, an expired answer is re-checked in a background
    thread while requests go on: a schema that moves is still caught at once, since a failing
    query invalidates the gate (api/errors.py) and the next request checks in its own thread.
    With `ttl` 0 every request checks."""

    def __init__(self, engine: Engine, ttl: float) -> None:
        self.engine = engine
        self.ttl = ttl
        # Monotonic deadline of the last good answer; 0 until the schema is seen at head, and
        # again after invalidate().
        self._ok_until = 0.0
        # Bumped by invalidate(), so a check that began before it cannot restore trust.
        self._generation = 0
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
        if self._ok_until and self.ttl > 0:
            start_in_background(self._lock, self._recheck, "schema-gate-check")
            return
        with self._lock:
            if time.monotonic() < self._ok_until:
                return
            status = self.status()
            if not status.at_head:
                raise SchemaNotAtHeadError(status.describe())
            self._trust()

    def _recheck(self) -> None:
        generation = self._generation
        if not self.status().at_head:
            self.invalidate()
        elif generation == self._generation:
            self._trust()

    def _trust(self) -> None:
        self._ok_until = time.monotonic() + self.ttl

    def invalidate(self) -> None:
        self._generation += 1
        self._ok_until = 0.0
