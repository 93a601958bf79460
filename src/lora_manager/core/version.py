"""The installed package's version, without importing anything heavy."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def package_version() -> str:
    try:
        return version("lora-manager")
    except PackageNotFoundError:
        return "unknown"
