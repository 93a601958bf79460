"""The HTTP API: app factory, auth, error handlers and health routes."""

from lora_manager.api.app import create_app

__all__ = ["create_app"]
