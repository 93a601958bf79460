"""Import a library into the catalog, and rescan it incrementally.

The rules, in the order they apply to each model file:

* A file whose size, mtime and sidecars (names, sizes, mtimes) are as recorded is unchanged:
  nothing of it is read. A rescan of an unchanged library reads no file contents.
* Only sidecars changed: they are re-read and merged with the header data stored at the last
  import; the model file is not opened.
* The file itself changed: it is hashed again and its header re-read.
* A path not in the catalog is hashed. If an adapter with that SHA-256 has lost its file, the
  file moved or was renamed: the adapter follows it, with everything the user set. Otherwise
  it is a new adapter.
* An adapter under the scanned roots whose file is gone is marked missing, never deleted.
* The user's fields (active, weight, ordinal, favourite, rating, notes, user tags) are never
  written by an import, and metadata is never replaced by empty or missing data.
* A broken file is recorded with its reason and the import goes on. A file still broken is
  counted failed again on every rescan, with the reason recorded, without being read again;
  a file imported with sidecar problems (invalid JSON...) is listed in `warnings` every time.
  One import runs at a time per database (a lock); a second one waits, then finds the work
  done.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from lora_manager.catalog import repository
from lora_manager.core.config import Settings
from lora_manager.core.db import make_engine
from lora_manager.core.errors import (
    ConflictError,
    ExitCode,
    ForbiddenError,
    InvalidInputError,
    LockTimeoutError,
    NotFoundError,
)
from lora_manager.core.locks import PostgresAdvisoryLock, SqliteFileLock
from lora_manager.core.models import Adapter, new_id, utcnow
from lora_manager.core.paths import inside, real, root_of
from lora_manager.ingest.hashing import autov2, hash_files, normalise_hash
from lora_manager.ingest.safetensors import (
    HeaderInfo,
    SafetensorsError,
    describe_header,
    read_header,
)
from lora_manager.ingest.scanner import ScannedFile, scan, scan_file, under
from lora_manager.ingest.sidecars import (
    AdapterMetadata,
    SidecarFiles,
    find_sidecars,
    merge_metadata,
    read_sidecars,
)

log = logging.getLogger(__name__)

IMPORT_LOCK_KEY = 0x4C4F5242  # next to the migration lock's "LORA"
# Files per write transaction. On SQLite a transaction holds the database's one write lock:
# it stays short (150 files, at most _HOLD), the next files are read between transactions,
# and the lock is left free for at least _SQLITE_GAP after each commit, longer than SQLite's
# busy handler sleeps between tries (100 ms at most), so API writers waiting on it get in.
_BATCH = {"sqlite": 150}
_DEFAULT_BATCH = 300
_SQLITE_GAP = 0.1
_HOLD = 0.5  # seconds a write transaction may last, whatever the batch size
_IMPORT_LOCK_TIMEOUT = 3600.0
# How long POST /adapters waits for a running import before answering 409 (a request must
# not hang for the length of an import).
REGISTER_LOCK_WAIT = 5.0


class ImportRefusedError(InvalidInputError):
    """An import that cannot start: no roots, or a root that is not a folder."""

    exit_code = ExitCode.FAILURE


class PathOutsideRootsError(ForbiddenError):
    """A path given to register lies outside every library root."""


class ImportProgress(Protocol):
    """What an import reports while it runs (the CLI draws bars, the API stores it)."""

    def scanned(self, files: int, total_bytes: int, hash_bytes: int) -> None: ...
    def hashed(self, nbytes: int) -> None: ...
    def processed(self, files: int) -> None: ...


class NoProgress:
    def scanned(self, files: int, total_bytes: int, hash_bytes: int) -> None:
        pass

    def hashed(self, nbytes: int) -> None:
        pass

    def processed(self, files: int) -> None:
        pass


@dataclass
class ImportSummary:
    """The outcome of one import, as the summary table and --json show it."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    missing: int = 0
    failed: int = 0
    skipped: int = 0
    files: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    failures: list[dict[str, str]] = field(default_factory=list)
    changes: list[dict[str, str]] = field(default_factory=list)
    skips: list[dict[str, str]] = field(default_factory=list)  # links out of the roots
    warnings: list[dict[str, str]] = field(default_factory=list)  # imported, sidecar problems

    @property
    def changed_catalog(self) -> bool:
        """Whether adapters were added or changed (so their embeddings may be stale)."""
        return not self.dry_run and bool(self.new or self.updated or self.moved)

    def record(self, kind: str, path: str, detail: str = "") -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if kind == "failed":
            self.failures.append({"path": path, "reason": detail})
        elif kind == "skipped":
            self.skips.append({"path": path, "reason": detail})
        elif kind != "unchanged" and len(self.changes) < 10_000:
            self.changes.append(
                {"change": kind, "path": path, **({"detail": detail} if detail else {})}
            )

    def warn(self, path: str, reason: str) -> None:
        self.warnings.append({"path": path, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileFacts:
    """What one import learned about one file."""

    scanned: ScannedFile
    sha256: str | None = None
    header: HeaderInfo | None = None
    header_error: str | None = None
    sidecars: SidecarFiles | None = None
    metadata: AdapterMetadata | None = None
    sidecar_errors: dict[str, str] = field(default_factory=dict)
    file_changed: bool = True
    unreadable: str | None = None
    # A sidecar it was read with before is now a link out of the roots, not followed: what
    # the files give replaces the stored metadata instead of merging with it.
    purge: bool = False


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def sidecar_state(files: SidecarFiles, scanned: ScannedFile) -> dict[str, list[int]]:
    """Name → [size, mtime_ns] of every sidecar present: what a rescan compares."""
    state: dict[str, list[int]] = {}
    for path in files.paths():
        known = scanned.neighbours.get(path.name)
        if known is not None:
            state[path.name] = [known[0], known[1]]
    return state


class Importer:
    """Runs imports against one database; see the module docstring for the rules."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        progress: ImportProgress | None = None,
        echo: Callable[[str], None] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.progress = progress or NoProgress()
        self.echo = echo or log.info
        self.dry_run = dry_run
        self.skipped: set[str] = set()  # paths the walk did not follow (links out of the roots)
        self._committed_at = 0.0  # monotonic time of the last write transaction's end

    # -- entry points ------------------------------------------------------------------

    @contextmanager
    def _writer(self) -> Iterator[sessionmaker[Session]]:
        """Sessions to write with: on SQLite, a dedicated engine whose transactions begin
        IMMEDIATE, so savepoints nest and no snapshot is lost to a concurrent writer."""
        engine = self.session_factory.kw["bind"]
        if engine.dialect.name != "sqlite":
            yield self.session_factory
            return
        writer = make_engine(self.settings, pooled=False, sqlite_writer=True)
        try:
            yield sessionmaker(bind=writer, expire_on_commit=False)
        finally:
            writer.dispose()

    def run(self, roots: Sequence[Path]) -> ImportSummary:
        started = time.monotonic()
        folders = self._check_roots(roots)
        summary = ImportSummary(dry_run=self.dry_run)
        with self.lock(), self._writer() as factory:
            allowed = self.settings.resolved_roots or folders
            result = scan(folders, ignore=self.settings.import_ignore, allowed=allowed)
            for problem in result.problems:
                summary.record("failed", problem.path, problem.reason)
            for skipped in result.skipped:
                summary.record("skipped", skipped.path, skipped.reason)
            self.skipped = {skipped.path for skipped in result.skipped}
            self._sync(factory, result.files, [str(f) for f in folders], summary, allowed)
        summary.seconds = round(time.monotonic() - started, 3)
        return summary

    def register(self, path: Path, lock_timeout: float = _IMPORT_LOCK_TIMEOUT) -> Adapter:
        """Import one file under a library root; returns its adapter. LockTimeoutError when
        another import holds the lock past `lock_timeout` seconds."""
        roots = self.settings.resolved_roots
        root = root_of(path, roots)
        if root is None:
            raise PathOutsideRootsError(f"{path} is outside the library roots (LORA_ROOTS)")
        scanned = scan_file(path, str(root), ignore=self.settings.import_ignore, allowed=roots)
        summary = ImportSummary()
        with self.lock(lock_timeout), self._writer() as factory:
            self._sync(factory, [scanned], [], summary)
        if summary.failed and not summary.new + summary.updated + summary.moved:
            raise ImportRefusedError(f"{path}: {summary.failures[0]['reason']}")
        with self.session_factory() as session:
            adapter = repository.adapter_by_real_path(session, scanned.real_path)
            if adapter is None:
                raise ImportRefusedError(f"{path} could not be registered")
            return adapter

    # -- internals ---------------------------------------------------------------------

    def _check_roots(self, roots: Sequence[Path]) -> list[Path]:
        if not roots:
            raise ImportRefusedError("nothing to import: give folders, or set LORA_ROOTS")
        folders = []
        for root in roots:
            if not Path(root).is_dir():
                raise ImportRefusedError(f"{root} is not a folder")
            folders.append(real(root))
        return folders

    def lock(self, timeout: float = _IMPORT_LOCK_TIMEOUT) -> Any:
        """The import lock of this database (a context manager); LockTimeoutError after
        `timeout` seconds held by another process."""
        engine = self.session_factory.kw["bind"]
        if engine.dialect.name == "postgresql":
            return PostgresAdvisoryLock(
                engine,
                timeout,
                self.echo,
                key=IMPORT_LOCK_KEY,
                what="the import lock",
                setting="another import is running",
            )
        database = self.settings.sqlite_path
        if database is None:
            return nullcontext()
        return SqliteFileLock(
            database,
            timeout,
            self.echo,
            suffix=".import.lock",
            what="the import lock",
            setting="another import is running",
        )

    def _sync(
        self,
        factory: sessionmaker[Session],
        files: list[ScannedFile],
        roots: list[str],
        summary: ImportSummary,
        allowed: Sequence[Path] = (),
    ) -> None:
        """Bring the catalog in line with `files`, found under the real folders `roots` (none:
        one file registered) of the library roots `allowed`."""
        summary.files += len(files)
        with factory() as session:
            known = {
                row.real_path or os.path.realpath(row.file_path): row
                for row in repository.ingest_state(session)
            }
            self.taken = repository.name_versions(session)
            self.created: set[str] = set()
            reasons = dict(
                session.execute(
                    select(Adapter.id, Adapter.ingest_error).where(
                        Adapter.ingest_error.is_not(None)
                    )
                ).all()
            )
            session.commit()  # hold no transaction (nor SQLite's write lock) while hashing
            seen = {f.real_path for f in files}
            unchanged, changed = [], []
            for scanned in files:
                facts = FileFacts(scanned)
                facts.sidecars = find_sidecars(scanned.path, siblings=scanned.neighbours)
                row = known.get(scanned.real_path)
                same_file = (
                    row is not None
                    and row.file_size == scanned.size
                    and row.file_mtime_ns == scanned.mtime_ns
                    and row.ingest_status != "missing"
                )
                recorded = row.sidecar_state if row is not None else None
                if same_file and (recorded or {}) == sidecar_state(facts.sidecars, scanned):
                    unchanged.append(facts)
                    continue
                facts.file_changed = not same_file
                facts.purge = any(
                    str(scanned.path.parent / name) in self.skipped for name in recorded or {}
                )
                changed.append(facts)
            to_hash = [f for f in changed if f.file_changed and f.scanned.hashed]
            self.progress.scanned(
                len(files), sum(f.size for f in files), sum(f.scanned.size for f in to_hash)
            )
            for facts in unchanged:
                self._unchanged(facts, known[facts.scanned.real_path], reasons, summary)
            self.progress.processed(len(unchanged))
            self._hash(to_hash, summary)

            library = [str(root) for root in allowed]

            def scanned_here(path: str, row: Any) -> bool:
                """Found by this walk, if still there: under the folders walked, or reached
                through a link in them whose target is now out of the roots (not followed)."""
                return under(path, roots) or (
                    under(row.file_path, roots) and not under(path, library)
                )

            gone = {
                path: row
                for path, row in known.items()
                if path not in seen and (scanned_here(path, row) or not os.path.exists(path))
            }
            moved_from: set[str] = set()
            size = _BATCH.get(session.get_bind().dialect.name, _DEFAULT_BATCH)
            for start in range(0, len(changed), size):
                chunk = changed[start : start + size]
                self._prepare(chunk, known)  # files read with no transaction open
                self._leave_the_lock_free(session)
                began, batch = time.monotonic(), []
                for facts in chunk:
                    adapter = self._apply(session, facts, known, gone, moved_from, summary)
                    if adapter is not None:
                        batch.append(adapter)
                    self.progress.processed(1)
                    if time.monotonic() - began > _HOLD:  # a slow machine: commit sooner
                        self._flush(session, batch)
                        self._leave_the_lock_free(session)
                        began, batch = time.monotonic(), []
                self._flush(session, batch)  # commits: the write lock is free again
            if roots:
                lost = {
                    path: row
                    for path, row in gone.items()
                    if path not in moved_from and scanned_here(path, row)
                }
                summary.missing += repository.mark_missing(
                    session, [row.id for row in lost.values()], now=utcnow()
                )
                summary.changes.extend(
                    {"change": "missing", "path": path}
                    for path, row in lost.items()
                    if row.ingest_status != "missing"
                )
            if self.dry_run:
                session.rollback()
            else:
                session.commit()

    def _flush(self, session: Session, adapters: list[Adapter]) -> None:
        if adapters:
            new_ids = frozenset(a.id for a in adapters if a.id in self.created)
            for adapter in adapters:
                repository.replace_tags(session, adapter, new=adapter.id in new_ids)
            repository.index_search(session, adapters, new_ids=new_ids)  # text set in _apply
        # A dry run undoes each batch as it goes (later batches depend on none of its rows:
        # the names taken and the files moved are tracked here), so it holds no lock longer.
        if self.dry_run:
            session.rollback()
        else:
            session.commit()
        self._committed_at = time.monotonic()

    def _leave_the_lock_free(self, session: Session) -> None:
        """On SQLite, wait until the write lock has been free for _SQLITE_GAP since the last
        commit (reading the files took part of it)."""
        if session.get_bind().dialect.name != "sqlite":
            return
        wait = self._committed_at + _SQLITE_GAP - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _hash(self, todo: list[FileFacts], summary: ImportSummary) -> None:
        by_path = {f.scanned.path: f for f in todo}
        workers = self.settings.import_workers or None
        for path, digest in hash_files(
            list(by_path), workers=workers, progress=self.progress.hashed
        ):
            facts = by_path[path]
            if isinstance(digest, OSError):
                facts.unreadable = f"unreadable: {digest.strerror or digest}"
            else:
                facts.sha256 = digest
                summary.bytes_hashed += facts.scanned.size

    def _prepare(self, chunk: list[FileFacts], known: dict[str, Any]) -> None:
        """Read the headers and sidecars of `chunk`: a file known and unchanged but for its
        sidecars merges them with the header stored last time (even {}), unless it was broken
        (read again, so it stays broken with its reason)."""
        rows = {f.scanned.real_path: known.get(f.scanned.real_path) for f in chunk}
        reuse = [
            row.id
            for facts in chunk
            if (row := rows[facts.scanned.real_path]) is not None
            and not facts.file_changed
            and row.ingest_status != "error"
        ]
        headers: dict[str, Any] = {}
        if reuse:
            # Through the application's engine: a read that takes no write lock.
            with self.session_factory() as reader:
                query = select(Adapter.id, Adapter.extra).where(Adapter.id.in_(reuse))
                headers = {
                    id_: (extra or {}).get("safetensors") for id_, extra in reader.execute(query)
                }
        for facts in chunk:
            if facts.unreadable:
                continue
            row = rows[facts.scanned.real_path]
            stored = headers.get(row.id) if row is not None else None
            self._read(facts, stored, row.sha256 if row is not None else None)

    def _read(
        self, facts: FileFacts, stored_header: dict[str, str] | None, known_sha256: str | None
    ) -> None:
        """The header (as stored when the file is unchanged, else from the file) and the
        sidecars, merged."""
        scanned = facts.scanned
        if scanned.hashed:
            if stored_header is not None:
                facts.header = describe_header(stored_header)
            else:
                try:
                    header = read_header(scanned.path)
                    facts.header = describe_header(header.metadata)
                    facts.header_error = header.problem
                except SafetensorsError as exc:
                    facts.header_error = str(exc)
                except OSError as exc:
                    facts.header_error = f"unreadable: {exc.strerror or exc}"
        assert facts.sidecars is not None
        data = read_sidecars(facts.sidecars)
        facts.sidecar_errors = dict(data.errors)
        merged = merge_metadata(
            facts.header,
            data,
            file_name=scanned.path.name,
            file_sha256=facts.sha256 or known_sha256,
        )
        # Where file metadata enters the catalog: PostgreSQL refuses U+0000 in text.
        facts.metadata = replace(
            merged, **{f.name: without_nul(getattr(merged, f.name)) for f in fields(merged)}
        )

    def _apply(
        self,
        session: Session,
        facts: FileFacts,
        known: dict[str, Any],
        gone: dict[str, Any],
        moved_from: set[str],
        summary: ImportSummary,
    ) -> Adapter | None:
        scanned = facts.scanned
        path = str(scanned.path)
        if facts.unreadable:
            summary.record("failed", path, facts.unreadable)
            return None
        row = known.get(scanned.real_path)
        adapter: Adapter | None = None
        kind = "new"
        if row is not None:
            adapter = session.get(Adapter, row.id)
            kind = "updated"
        elif facts.sha256:
            adapter = self._moved_adapter(session, facts.sha256, gone, moved_from)
            kind = "moved" if adapter is not None else "new"
        assert facts.metadata is not None  # read by _prepare
        creating = adapter is None
        problems = [facts.header_error] if facts.header_error else []
        problems += [f"{name}: {reason}" for name, reason in sorted(facts.sidecar_errors.items())]
        try:
            # The savepoint opens before any change, so a conflict undoes this file only.
            with session.begin_nested():
                if adapter is None:
                    adapter = Adapter(
                        id=new_id(), name=facts.metadata.name or scanned.path.stem, file_path=path
                    )
                    session.add(adapter)
                    self.created.add(adapter.id)
                previous_path = adapter.real_path
                previous_key = (adapter.name, adapter.version)
                self._apply_file(adapter, facts)
                self._apply_metadata(adapter, facts.metadata, creating=creating, purge=facts.purge)
                self._make_unique(adapter, facts, previous_key)
                adapter.ingest_status = "error" if facts.header_error else "ok"
                adapter.ingest_error = "; ".join(problems) or None
                # Computed before the INSERT, so the row is written once.
                adapter.search_text = repository.build_search_text(adapter)
                session.flush()
        except (IntegrityError, DataError) as exc:  # this file only; the import goes on
            summary.record("failed", path, f"could not be stored: {exc.orig}")
            return None
        if kind == "moved":
            moved_from.add(previous_path or "")
        if facts.header_error:
            summary.record("failed", path, facts.header_error)
        else:
            summary.record(kind, path, "; ".join(problems))
            if problems:
                summary.warn(path, "; ".join(problems))
        return adapter

    @staticmethod
    def _unchanged(
        facts: FileFacts, row: Any, reasons: dict[str, str | None], summary: ImportSummary
    ) -> None:
        """An unchanged file, not read: still broken, still warned about, or unchanged."""
        path, reason = str(facts.scanned.path), reasons.get(row.id)
        if row.ingest_status == "error":
            summary.record("failed", path, reason or "broken")
            return
        summary.record("unchanged", path)
        if reason:
            summary.warn(path, reason)

    @staticmethod
    def _moved_adapter(
        session: Session, digest: str, gone: dict[str, Any], moved_from: set[str]
    ) -> Adapter | None:
        """The adapter whose file with this SHA-256 is gone: the file moved here."""
        for path, row in gone.items():
            if row.sha256 == digest and path not in moved_from:
                return session.get(Adapter, row.id)
        return None

    def _apply_file(self, adapter: Adapter, facts: FileFacts) -> None:
        scanned = facts.scanned
        now = utcnow()
        adapter.file_path = str(scanned.path)
        adapter.real_path = scanned.real_path
        adapter.primary_file_local_path = str(scanned.path)
        adapter.library_root = scanned.root
        adapter.file_format = scanned.file_format
        adapter.file_size = scanned.size
        adapter.file_mtime_ns = scanned.mtime_ns
        if facts.sha256:
            adapter.sha256 = facts.sha256
            adapter.autov2 = autov2(facts.sha256)
            adapter.primary_file_sha256 = facts.sha256
        assert facts.sidecars is not None
        adapter.sidecar_state = sidecar_state(facts.sidecars, scanned)
        main_json = facts.sidecars.civitai_info or facts.sidecars.json
        if main_json is None and facts.purge:
            adapter.json_file_path = adapter.json_file_size = adapter.json_file_mtime = None
        if main_json is not None:
            known = scanned.neighbours.get(main_json.name)
            adapter.json_file_path = str(main_json)
            if known is not None:
                adapter.json_file_size = known[0]
                adapter.json_file_mtime = datetime.fromtimestamp(known[1] / 1e9, UTC).replace(
                    tzinfo=None
                )
        if facts.sidecars.preview is not None:
            adapter.preview_path = str(facts.sidecars.preview)
        elif adapter.preview_path and not self._in_library(adapter.preview_path):
            # Moved without it, deleted, or a link out of the roots: don't point at it.
            adapter.preview_path = None
        adapter.missing_since = None
        adapter.last_ingested_at = now
        adapter.updated_at = now

    def _in_library(self, path: str) -> bool:
        """Whether `path` exists inside the library roots (any path, with no roots set)."""
        roots = [str(root) for root in self.settings.resolved_roots]
        return os.path.exists(path) and (not roots or under(os.path.realpath(path), roots))

    @staticmethod
    def _apply_metadata(
        adapter: Adapter, meta: AdapterMetadata, *, creating: bool, purge: bool = False
    ) -> None:
        """Copy merged metadata; empty values never replace what is there, unless `purge`
        (a sidecar read before is a link out of the roots now: none of it may stay)."""
        fields: dict[str, Any] = {
            "name": meta.name,
            "version": meta.version_name,
            "canonical_version_name": meta.version_name,
            "description": meta.description,
            "author_username": meta.author,
            "base_model": meta.base_model,
            "sd_version": meta.sd_version,
            "tags": meta.tags,
            "trained_words": meta.trained_words,
            "triggers": meta.triggers,
            "activation_text": meta.activation_text,
            "preferred_weight": meta.preferred_weight,
            "nsfw_level": meta.nsfw_level,
            "stats": meta.stats,
            "download_count": meta.download_count,
            "published_at": meta.published_at,
            "primary_file_name": meta.primary_file_name,
            "primary_file_size_kb": meta.primary_file_size_kb,
            "primary_file_download_url": meta.download_url,
            "tensor_sha256": meta.tensor_sha256,
            "supports_generation": meta.supports_generation,
        }
        cleared = {"name": Path(adapter.file_path).stem, "nsfw_level": 0}
        cleared["supports_generation"] = False
        for name, value in fields.items():
            if not _empty(value):
                setattr(adapter, name, value)
            elif purge:
                setattr(adapter, name, cleared.get(name))
        declared = normalise_hash(meta.declared_sha256) if meta.declared_sha256 else None
        if declared and adapter.sha256:
            adapter.declared_sha256 = declared if declared != adapter.sha256 else None
        elif purge:
            adapter.declared_sha256 = None
        if meta.extra or purge:
            adapter.extra = {**({} if purge else adapter.extra or {}), **meta.extra}
        if creating:
            adapter.weight = meta.preferred_weight if meta.preferred_weight else 1.0
            adapter.active = False
            adapter.is_favorite = bool(meta.favorite_hint)
            adapter.notes = meta.notes or None
            adapter.nsfw_level = adapter.nsfw_level or 0

    def _make_unique(
        self, adapter: Adapter, facts: FileFacts, previous: tuple[str, str | None]
    ) -> None:
        """(name, version) is unique: a collision gets a suffix derived from the file's hash
        (then a counter, for identical copies), the same on every run."""
        if previous[1] is not None and self.taken.get((previous[0], previous[1])) == adapter.id:
            del self.taken[(previous[0], previous[1])]
        base = adapter.version
        if base is None:
            return  # the unique index lets NULL versions repeat
        basis = (
            facts.sha256
            or adapter.sha256
            or hashlib.sha256(facts.scanned.real_path.encode()).hexdigest()
        )
        candidates = itertools.chain(
            [base, f"{base} [{basis[:8]}]"], (f"{base} [{basis[:8]}-{n}]" for n in range(2, 10_000))
        )
        for version in candidates:
            holder = self.taken.get((adapter.name, version))
            if holder is None or holder == adapter.id:
                adapter.version = version
                self.taken[(adapter.name, version)] = adapter.id
                return
        raise ImportRefusedError(f"no free version for {adapter.name!r} {base!r}")


def without_nul(value: Any) -> Any:
    """`value` with U+0000 removed from every string, dictionary key and nested value: a
    NUL read from a header or a sidecar is never information, and PostgreSQL's text refuses it
    (one such value used to fail the whole import)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(item) for item in value]
    return value


def register_file(session: Session, settings: Settings, path: str) -> Adapter:
    """POST /adapters: import one file, confined to the library roots."""
    if not settings.lora_roots:
        raise ConflictError("no library roots are configured (LORA_ROOTS)")
    if not inside(path, settings.resolved_roots):
        raise ForbiddenError(f"{path} is outside the library roots")
    factory = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
    try:
        adapter = Importer(settings, factory).register(Path(path), REGISTER_LOCK_WAIT)
    except FileNotFoundError as exc:
        raise NotFoundError(str(exc)) from None
    except LockTimeoutError:
        message = "an import is under way; register the file once it has finished"
        raise ConflictError(message) from None
    return session.merge(adapter)
