"""Path confinement: every file LoRA Manager reads or serves lies under a library root."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def inside(path: str | Path, roots: Sequence[Path]) -> bool:
    """True when the real path of `path` is one of `roots` or below one (roots are real)."""
    resolved = real(path)
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def root_of(path: str | Path, roots: Sequence[Path]) -> Path | None:
    resolved = real(path)
    matches = [root for root in roots if resolved == root or resolved.is_relative_to(root)]
    return max(matches, key=lambda root: len(root.parts)) if matches else None
