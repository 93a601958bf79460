"""Compose a prompt from adapters: `<lora:NAME:WEIGHT>` tokens plus trigger words.

NAME is the file stem a generation server resolves (AUTOMATIC1111, SDNext and ComfyUI look
LoRAs up by file name), never the display name. Rules:

* adapters go in the order given (the active ones by ordinal, then name);
* an adapter whose file is missing or unreadable is skipped, with the reason;
* a NAME already in the text (typed into the prefix, say) or given twice goes in once;
* trigger words come from the adapter's trained words, else its triggers, else its activation
  text; each goes in once (case-insensitive), and not when the prefix or suffix has it;
* the prompt is `prefix, triggers, tokens, suffix` with empty parts left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

from lora_manager.core.models import Adapter

_TOKEN = re.compile(r"<lora:([^:>]+)(?::[^>]*)?>", re.IGNORECASE)


@dataclass(frozen=True)
class ComposedAdapter:
    id: str
    name: str
    token_name: str
    weight: float
    triggers: list[str]


@dataclass
class Composition:
    prompt: str
    negative_prompt: str | None
    adapters: list[ComposedAdapter] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def token_name(adapter: Adapter) -> str:
    """The name a generation server resolves: the model file's stem."""
    return PurePath(adapter.file_path).stem if adapter.file_path else adapter.name


def format_weight(weight: float) -> str:
    """0.8 → "0.8", 1.0 → "1", 0.75 → "0.75" (two decimals at most); -0 and -0.001 → "0"."""
    # Adding 0.0 turns a negative zero (from -0 or from rounding) into 0.
    return f"{round(weight, 2) + 0.0:.2f}".rstrip("0").rstrip(".") or "0"


def trigger_words(adapter: Adapter) -> list[str]:
    for source in (adapter.trained_words, adapter.triggers):
        words = [str(word).strip() for word in source or [] if str(word).strip()]
        if words:
            return words
    text = adapter.activation_text or ""
    return [word.strip() for word in text.split(",") if word.strip()]


def compose(
    adapters: Sequence[Adapter],
    *,
    prefix: str = "",
    suffix: str = "",
    negative_prompt: str | None = None,
    include_triggers: bool = True,
    weights: Mapping[str, float] | None = None,
) -> Composition:
    """Build the prompt; see the module docstring for the rules."""
    weights = weights or {}
    typed = prefix + " " + suffix
    seen_tokens = {name.lower() for name in _TOKEN.findall(typed)}
    seen_triggers = {word.strip().lower() for word in re.split(r"[,\n]", typed) if word.strip()}
    result = Composition(prompt="", negative_prompt=negative_prompt or None)
    tokens: list[str] = []
    for adapter in adapters:
        if adapter.ingest_status in ("missing", "error"):
            reason = "file missing" if adapter.ingest_status == "missing" else "file unreadable"
            result.skipped.append({"id": adapter.id, "reason": reason})
            continue
        name = token_name(adapter)
        if name.lower() in seen_tokens:
            result.skipped.append({"id": adapter.id, "reason": f"<lora:{name}> already in"})
            continue
        seen_tokens.add(name.lower())
        weight = weights.get(adapter.id, adapter.weight) + 0.0  # no negative zero
        tokens.append(f"<lora:{name}:{format_weight(weight)}>")
        added: list[str] = []
        if include_triggers:
            for word in trigger_words(adapter):
                if word.lower() not in seen_triggers:
                    seen_triggers.add(word.lower())
                    added.append(word)
        result.triggers.extend(added)
        result.adapters.append(ComposedAdapter(adapter.id, adapter.name, name, weight, added))
    parts = [prefix.strip(), ", ".join(result.triggers), " ".join(tokens), suffix.strip()]
    result.prompt = ", ".join(part for part in parts if part)
    return result
