"""The delivery back ends, by mode. A new back end: one module in this package (a class with
the `Backend` shape of `base`) and one line below, plus its settings in core/config.py; the
API's `mode` enum, the parameter check and the worker follow from this mapping."""

from __future__ import annotations

from lora_manager.deliveries.backends.base import Backend
from lora_manager.deliveries.backends.cli import CliBackend
from lora_manager.deliveries.backends.http import HttpBackend
from lora_manager.deliveries.backends.sdnext import SdnextBackend

# In the order the API lists the modes.
BACKENDS: dict[str, Backend] = {
    backend.mode: backend
    for backend in (
        HttpBackend(),
        CliBackend(),
        SdnextBackend(),
    )
}
