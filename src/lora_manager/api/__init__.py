"""The HTTP API: app factory, auth, error handlers and health routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lora_manager.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: services import lora_manager.api.errors without building the app.
    if name == "create_app":
        from lora_manager.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
