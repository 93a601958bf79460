"""The HTTP entry point: app factory, request guard, error handlers, health and docs routes."""

from lora_manager.api.app import create_app

__all__ = ["create_app"]
