"""AUTOMATIC1111 user metadata: a `<stem>.json` that is no Civitai JSON, written by the
web UI's card editor. All of it is the user's own edits, the first tier of the precedence."""

from __future__ import annotations

from typing import Any

from lora_manager.ingest.sidecars.base import SidecarFormat
from lora_manager.ingest.sidecars.values import Fields, as_text, as_weight

# The card editor's keys; "description" is left out: inside a Civitai model JSON it is Civitai's.
A1111_EDIT_KEYS: tuple[str, ...] = (
    "activation text",
    "preferred weight",
    "sd version",
    "negative text",
    "notes",
)


def edits(document: dict[str, Any]) -> Fields:
    """The card editor's keys (`A1111_EDIT_KEYS`), wherever the editor saved them."""
    sd_version = as_text(document.get("sd version"))
    return {
        "activation_text": as_text(document.get("activation text")),
        "preferred_weight": as_weight(document.get("preferred weight")),
        "sd_version": None if (sd_version or "").casefold() == "unknown" else sd_version,
        "negative_text": as_text(document.get("negative text")),
        "notes": as_text(document.get("notes")),
    }


def _user_fields(document: dict[str, Any]) -> Fields:
    return {"description": as_text(document.get("description")), **edits(document)}


# After the Civitai formats that share `<stem>.json` in the registry: it claims any object.
FORMAT = SidecarFormat(name="a1111", slot="json", suffix=".json", user_fields=_user_fields)
