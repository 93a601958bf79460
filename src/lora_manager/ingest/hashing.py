"""SHA-256 of whole model files, the key Civitai and every tool use to identify a file.

Files are read in large blocks into one reused buffer: hashlib releases the GIL while it digests
a big block, so hashing many files on a thread pool scales with the cores (and the disk).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path

HASH_BLOCK_SIZE = 4 * 1024 * 1024
AUTOV2_LENGTH = 10


def sha256_file(
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
    block_size: int = HASH_BLOCK_SIZE,
) -> str:
    """Lower-case hex SHA-256 of the file's bytes; `progress(n)` after each block of n bytes.

    Raises OSError when the file cannot be opened or read.
    """
    digest = hashlib.sha256()
    buffer = bytearray(block_size)
    view = memoryview(buffer)
    # Unbuffered: the reads go straight into our buffer, no second copy.
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
            if progress is not None:
                progress(count)
    return digest.hexdigest()


def normalise_hash(value: str | None) -> str:
    """A hash as lower-case hex without a `0x` prefix or surrounding blanks ("" for None)."""
    if not value:
        return ""
    return value.strip().lower().removeprefix("0x")


def autov2(sha256_hex: str) -> str:
    """Civitai's AutoV2 of a file: the first 10 hex digits of its SHA-256, upper case."""
    return normalise_hash(sha256_hex)[:AUTOV2_LENGTH].upper()


def hash_files(
    paths: Sequence[Path],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[Path, str | OSError]]:
    """Hash `paths` on a thread pool, yielding `(path, sha256_hex)` in completion order.

    A file that cannot be read yields `(path, the OSError)` instead of raising, so one bad
    file does not stop a scan. `workers` defaults to the CPU count (use 1 or 2 on a spinning
    disk, where parallel reads seek). `progress(n)` is called from the WORKER THREADS, several
    at once, so it must be thread-safe (a lock, or an atomic operation such as a queue put).
    Closing the iterator early cancels the files not yet started.
    """
    if not paths:
        return
    count = max(1, min(workers or os.cpu_count() or 1, len(paths)))
    executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="sha256")
    try:
        futures: dict[Future[str], Path] = {
            executor.submit(sha256_file, path, progress=progress): path for path in paths
        }
        for future in as_completed(futures):
            path = futures[future]
            try:
                yield path, future.result()
            except OSError as exc:
                yield path, exc
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
