"""Work that callers start but never wait for."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lora_manager.core.db import short_error

log = logging.getLogger(__name__)


def start_in_background(lock: threading.Lock, work: Callable[[], object], name: str) -> bool:
    """Run `work` in a daemon thread holding `lock`; False (and nothing started) if the lock
    is taken, so at most one runs. A failure is logged, never raised to the caller."""
    if not lock.acquire(blocking=False):
        return False

    def run() -> None:
        try:
            work()
        except Exception as exc:  # a background check must not die loudly: the next one retries
            log.warning("%s failed: %s", name, short_error(exc))
        finally:
            lock.release()

    try:
        threading.Thread(target=run, name=name, daemon=True).start()
    except BaseException:
        lock.release()
        raise
    return True
