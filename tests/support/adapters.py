"""Adapter rows made by hand, with the fields prompt composition reads."""

from __future__ import annotations

from typing import Any

from lora_manager.core.models import Adapter


def adapter(name: str, stem: str, **fields: Any) -> Adapter:
    """An active, readable adapter `id-<stem>` at /loras/<stem>.safetensors, weight 1."""
    values: dict[str, Any] = {
        "id": f"id-{stem}",
        "name": name,
        "file_path": f"/loras/{stem}.safetensors",
        "weight": 1.0,
        "active": True,
        "ingest_status": "ok",
        "nsfw_level": 0,
    }
    values.update(fields)
    return Adapter(**values)


def three_adapters() -> list[Adapter]:
    """Second (ordinal 2, weight 0.6, trigger "two"), First (ordinal 1, "one") and an
    inactive one ("nope"): composed, they give "one, two, <lora:first:1> <lora:second:0.6>"."""
    return [
        adapter("Second", "second", ordinal=2, weight=0.6, trained_words=["two"]),
        adapter("First", "first", ordinal=1, trained_words=["one"]),
        adapter("Inactive", "inactive", active=False, trained_words=["nope"]),
    ]
