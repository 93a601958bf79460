"""The preview image (or clip) beside a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# In order of preference: the tools' own `.preview.*` names first, then a bare image.
PREVIEW_SUFFIXES: tuple[str, ...] = (
    ".preview.png",
    ".preview.jpg",
    ".preview.jpeg",
    ".preview.webp",
    ".preview.mp4",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
)


def find_preview(directory: Path, stem: str, exists: Callable[[str], bool]) -> Path | None:
    """The preferred preview of the model `stem` in `directory`; `exists(name)` says whether
    a file name is there."""
    return next(
        (directory / (stem + suffix) for suffix in PREVIEW_SUFFIXES if exists(stem + suffix)),
        None,
    )
