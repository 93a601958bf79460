"""Walk library roots: find model files and what sits next to them, reading no file contents.

Symlinks are followed once, and only into the library roots: a symlink (a model, a folder, a
sidecar or a preview) whose real target lies outside every root (LORA_ROOTS) is skipped with
the reason, never read. A symlinked folder is walked unless its real folder was already
walked (which also ends loops), and a model reached by several paths is listed once, by its
real path. Broken links, link loops and model names that are not regular files are reported
as problems with a reason, and the walk goes on.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HASHED_FORMATS = {".safetensors": "safetensors"}
# Listed in the catalog but never opened: pickles may run code when loaded.
LISTED_FORMATS = {".pt": "pt", ".ckpt": "ckpt", ".bin": "bin"}
MODEL_FORMATS = {**HASHED_FORMATS, **LISTED_FORMATS}


@dataclass(frozen=True)
class ScannedFile:
    """One model file as the walk found it."""

    path: Path  # as reached under its root (may run through a symlink)
    real_path: str
    root: str  # the real path of the root it was found under
    size: int
    mtime_ns: int
    file_format: str
    # Every regular file in the same folder: name → (size, mtime_ns), for sidecars.
    neighbours: dict[str, tuple[int, int]] = field(repr=False, compare=False)

    @property
    def hashed(self) -> bool:
        return self.file_format in HASHED_FORMATS.values()


@dataclass(frozen=True)
class ScanProblem:
    path: str
    reason: str


@dataclass
class ScanResult:
    files: list[ScannedFile] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    skipped: list[ScanProblem] = field(default_factory=list)  # links out of the roots
    folders: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def model_format(name: str) -> str | None:
    return MODEL_FORMATS.get(os.path.splitext(name)[1].lower())


def ignore_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """One compiled regex for all ignore globs (a rescan tests every name in the library)."""
    if not patterns:
        return lambda _name: False
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
    return lambda name: regex.match(name) is not None


def _link_problem(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"broken symlink (points to {target})"
    return f"unreadable: {exc.strerror or exc}"


def under(path: str, roots: Sequence[str]) -> bool:
    """`paths.inside` for paths already real: string checks, no realpath per path."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def link_outside(entry: os.DirEntry[str], allowed: Sequence[str]) -> str | None:
    """Why `entry` is not followed: a symlink whose real target is outside every root."""
    if not entry.is_symlink():
        return None
    target = os.path.realpath(entry.path)
    if under(target, allowed):
        return None
    return f"symlink to {target}, outside the library roots (LORA_ROOTS): not followed"


def scan(
    roots: Sequence[Path],
    *,
    ignore: Sequence[str] = (),
    on_folder: Callable[[int], None] | None = None,
    allowed: Sequence[Path] | None = None,
) -> ScanResult:
    """Walk `roots` (real, existing folders) and list every model file once; symlinks are
    followed into `allowed` (real folders: the library roots; default `roots`) only."""
    inside = [str(root) for root in (roots if allowed is None else allowed)]
    result = ScanResult()
    seen_files: dict[str, ScannedFile] = {}
    seen_folders: set[tuple[int, int]] = set()
    ignored = ignore_matcher(ignore)
    for root in roots:
        real_root = os.path.realpath(root)
        stack = [str(root)]
        while stack:
            folder = stack.pop()
            try:
                info = os.stat(folder)
            except OSError as exc:
                result.problems.append(ScanProblem(folder, _link_problem(folder, exc)))
                continue
            if (info.st_dev, info.st_ino) in seen_folders:
                continue  # a link back to a folder already walked: a loop or a second path
            seen_folders.add((info.st_dev, info.st_ino))
            result.folders += 1
            if on_folder is not None:
                on_folder(result.folders)
            _scan_folder(folder, real_root, ignored, inside, stack, seen_files, result)
    result.files = list(seen_files.values())
    return result


def scan_file(
    path: Path, root: str, *, ignore: Sequence[str] = (), allowed: Sequence[Path] = ()
) -> ScannedFile:
    """One model file, with its folder's listing as a walk would record it (POST /adapters):
    sidecar links out of `allowed` (default: `root`) are left out.
    Raises FileNotFoundError when `path` is not a model file."""
    inside = [str(folder) for folder in allowed] or [root]
    real_path = os.path.realpath(path)
    fmt = model_format(os.path.basename(real_path))
    if fmt is None or not os.path.isfile(real_path):
        raise FileNotFoundError(f"{path} is not a model file")
    ignored = ignore_matcher(ignore)
    neighbours: dict[str, tuple[int, int]] = {}
    with os.scandir(os.path.dirname(real_path)) as entries:
        for entry in entries:
            if ignored(entry.name) or link_outside(entry, inside):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat()
                if stat.S_ISREG(info.st_mode):
                    neighbours[entry.name] = (info.st_size, info.st_mtime_ns)
    info = os.stat(real_path)
    return ScannedFile(
        path=Path(path),
        real_path=real_path,
        root=root,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        file_format=fmt,
        neighbours=neighbours,
    )


def _scan_folder(
    folder: str,
    real_root: str,
    ignored: Callable[[str], bool],
    allowed: Sequence[str],
    stack: list[str],
    seen_files: dict[str, ScannedFile],
    result: ScanResult,
) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        result.problems.append(ScanProblem(folder, f"unreadable folder: {exc.strerror or exc}"))
        return
    neighbours: dict[str, tuple[int, int]] = {}
    models: list[tuple[os.DirEntry[str], os.stat_result, str]] = []
    for entry in entries:
        if ignored(entry.name):
            continue
        fmt = model_format(entry.name)
        try:
            info = entry.stat()  # follows symlinks
        except OSError as exc:
            if fmt is not None or entry.is_symlink():
                result.problems.append(ScanProblem(entry.path, _link_problem(entry.path, exc)))
            continue
        outside = link_outside(entry, allowed)
        if outside is not None:
            result.skipped.append(ScanProblem(entry.path, outside))
            continue
        if os.path.isdir(entry.path) if entry.is_symlink() else entry.is_dir():
            if fmt is not None:
                result.problems.append(
                    ScanProblem(entry.path, "not a regular file (a folder with a model's name)")
                )
            stack.append(entry.path)
            continue
        neighbours[entry.name] = (info.st_size, info.st_mtime_ns)
        if fmt is not None:
            models.append((entry, info, fmt))
    for entry, info, fmt in sorted(models, key=lambda item: item[0].name):
        real_path = os.path.realpath(entry.path)
        earlier = seen_files.get(real_path)
        # Listed once; reached directly, the file's own folder (and sidecars) win over a link's.
        if earlier is not None and (earlier.path == Path(real_path) or entry.path != real_path):
            continue
        seen_files[real_path] = ScannedFile(
            path=Path(entry.path),
            real_path=real_path,
            root=real_root,
            size=info.st_size,
            mtime_ns=info.st_mtime_ns,
            file_format=fmt,
            neighbours=neighbours,
        )
