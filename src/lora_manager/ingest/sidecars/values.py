"""Tolerant readers of sidecar values: whatever a tool wrote, a value of the wanted type or
None (or an empty list), never an exception."""

from __future__ import annotations

import html
import json
import math
import re
from datetime import datetime
from typing import Any

from lora_manager.ingest.hashing import normalise_hash
from lora_manager.ingest.safetensors import parse_datetime, split_list, unique_words

_HEX64 = re.compile(r"[0-9a-f]{64}")

# A source's fields: catalog field name → value (see merge.py for the names).
Fields = dict[str, Any]


def present(value: Any) -> bool:
    """Whether `value` says something: None, blank strings and empty collections do not."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list | dict | tuple | set):
        return bool(value)
    return True


def overlay(primary: Fields, secondary: Fields) -> Fields:
    """`primary`'s present values, `secondary`'s where `primary` has none; lists united."""
    merged = dict(secondary)
    for key, value in primary.items():
        if isinstance(value, list):
            merged[key] = unique_words([*value, *secondary.get(key, [])])
        elif key == "nsfw":
            merged[key] = value or secondary.get(key) is True
        elif present(value) or key not in merged:
            merged[key] = value
    return merged


def html_to_text(text: str) -> str:
    """Civitai's HTML description as plain text: tags stripped, entities decoded, line and
    paragraph breaks kept."""
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", "", text)
    text = re.sub(r"(?i)<\s*li\b[^>]*>", "\n- ", text)
    text = re.sub(r"(?i)<\s*br\s*/?\s*>", "\n", text)
    text = re.sub(r"(?i)</\s*tr\s*>", "\n", text)
    text = re.sub(r"(?i)</\s*(p|div|h[1-6]|ul|ol|table|blockquote|pre)\s*>", "\n\n", text)
    text = re.sub(r"<[^>]*>", "", text)
    text = html.unescape(text).replace("\xa0", " ")
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def as_html_text(value: Any) -> str | None:
    text = as_text(value)
    return (html_to_text(text) or None) if text else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_weight(value: Any) -> float | None:
    """A preferred weight: 0 (A1111's "unset") and garbage are None."""
    number = as_float(value)
    return number if number else None


def as_kb(value: Any) -> int | None:
    number = as_float(value)
    return round(number) if number is not None and number >= 0 else None


def as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def as_date(value: Any) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


def as_sha256(value: Any) -> str | None:
    text = normalise_hash(value) if isinstance(value, str) else ""
    return text if _HEX64.fullmatch(text) else None


def sha256s(*values: Any) -> tuple[str, ...]:
    """The valid SHA-256 hashes among `values`, normalised."""
    return tuple(sha for value in values if (sha := as_sha256(value)))


def as_words(value: Any) -> list[str]:
    """Strings of a list (or a comma-separated string); `{"name": ...}` items as their name."""
    if isinstance(value, str):
        return split_list(value)
    words: list[str] = []
    for item in as_list(value):
        word = as_text(item.get("name")) if isinstance(item, dict) else as_text(item)
        if word:
            words.append(word)
    return unique_words(words)


def as_json_object(value: Any) -> Any:
    """`value` itself if already parsed, else its JSON text parsed; None if it is not JSON."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None
