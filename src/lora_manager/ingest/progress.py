"""Progress of an import: Rich bars in a terminal, throttled rows for API-started imports."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

log = logging.getLogger(__name__)


class RichImportProgress:
    """Two bars: files processed (count, ETA) and bytes hashed (size, rate, ETA)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<7}"),
            BarColumn(),
            MofNCompleteColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.files: TaskID | None = None
        self.bytes: TaskID | None = None

    def __enter__(self) -> RichImportProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def scanned(self, files: int, total_bytes: int, hash_bytes: int) -> None:
        self.files = self.progress.add_task("files", total=files)
        self.bytes = self.progress.add_task("hashing", total=max(hash_bytes, 1))

    def hashed(self, nbytes: int) -> None:
        if self.bytes is not None:
            self.progress.advance(self.bytes, nbytes)  # Rich's progress is thread-safe

    def processed(self, files: int) -> None:
        if self.files is not None:
            self.progress.advance(self.files, files)


class RecordingProgress:
    """Counts progress and hands a snapshot to `save` at most every `interval` seconds, and
    at once and then every `heartbeat` seconds even without progress (a sign of life while a
    large file is hashed or the import lock is awaited).

    `save` runs on a thread of its own: the importer calls in while its transaction holds the
    SQLite write lock, and a progress row written from that thread would wait on itself."""

    def __init__(
        self,
        save: Callable[[dict[str, Any]], None],
        interval: float = 0.5,
        heartbeat: float | None = None,
    ) -> None:
        self.save = save
        self.interval = interval
        self.heartbeat = heartbeat
        self.state = {"files_total": 0, "files_done": 0, "bytes_total": 0, "bytes_hashed": 0}
        self._lock = threading.Lock()
        self._last = 0.0
        self._due = threading.Event()
        if heartbeat is not None:
            self._due.set()
        self._closed = False
        self._saver = threading.Thread(target=self._save_loop, name="import-progress", daemon=True)
        self._saver.start()

    def _save_loop(self) -> None:
        while True:
            self._due.wait(self.heartbeat)
            self._due.clear()
            with self._lock:
                snapshot, closed = dict(self.state), self._closed
            try:
                self.save(snapshot)
            except Exception as exc:  # progress is advisory: the import goes on
                log.warning("import progress not saved: %s", exc)
            if closed:
                return

    def _maybe_save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self._due.set()

    def close(self) -> None:
        """Save the last snapshot and stop the saver thread."""
        with self._lock:
            self._closed = True
        self._due.set()
        self._saver.join(timeout=10)

    def scanned(self, files: int, total_bytes: int, hash_bytes: int) -> None:
        with self._lock:
            self.state.update(files_total=files, bytes_total=hash_bytes)
        self._maybe_save(force=True)

    def hashed(self, nbytes: int) -> None:
        with self._lock:
            self.state["bytes_hashed"] += nbytes

    def processed(self, files: int) -> None:
        with self._lock:
            self.state["files_done"] += files
        self._maybe_save()
