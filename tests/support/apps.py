"""Settings for an app under test, its job queue and results inside the test's own folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_manager.core.config import Settings, load_settings


def app_settings(url: str, folder: Path, **values: Any) -> Settings:
    """The database at `url`, the SQLite queue and the results under `folder`, then `values`
    (which may replace any of these)."""
    return load_settings(
        **{
            "database_url": url,
            "queue_path": folder / "queue.db",
            "results_dir": folder / "results",
            **values,
        }
    )
