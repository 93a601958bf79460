"""The text side of recommendations: trigger normalisation and aliases, and the text an
embedder reads for an adapter.

Normalisation is Unicode NFKC then casefold (then NFKC again, to recompose what casefolding
decomposed), and every character that is not a letter, digit or combining mark becomes a
space. NFKC folds compatibility forms people type by accident (full-width letters, ligatures,
superscripts) but keeps accents: "Café" stays "café", because ASCII-folding would merge words
that differ in languages where the accent is the spelling, and a trigger is matched against
what the model was trained on, accent included. Combining marks count as part of their word
so scripts that write vowels as marks (Devanagari, Thai) are not cut into letters.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    # Only for hints: the embedders import this module and need no database layer.
    from lora_manager.core.models import Adapter

TriggerSource = Literal["trained_words", "triggers", "activation_text"]

# Descriptions are free-form essays; the start says what the adapter is, the rest is mostly
# usage notes and changelogs that would drown the name and tags in the embedding.
DESCRIPTION_LIMIT = 2_000

_SCRIPT_OR_STYLE = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>")
_COMMENT = re.compile(r"(?s)<!--.*?-->")
_TAG = re.compile(r"<[^>]*>")
_ASCII_WORD = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=8192)
def _is_word_char(char: str) -> bool:
    # Cached: a text has few distinct characters, and unicodedata.category is the slow part.
    return char.isalnum() or unicodedata.category(char).startswith("M")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def word_text(text: str) -> str:
    """`text` folded (NFKC, casefold) with every non-word character replaced by a space."""
    folded = _fold(text)
    # One translate over the text's distinct characters, not a Python loop over every one.
    table = {ord(char): " " for char in set(folded) if not _is_word_char(char)}
    return folded.translate(table)


def word_tokens(text: str) -> list[str]:
    """The words of `text` under the same rules as `normalize_trigger`."""
    if text.isascii():
        # Same result for ASCII (NFKC and casefold are lower() there), several times faster.
        return _ASCII_WORD.findall(text.lower())
    return word_text(text).split()


def normalize_trigger(text: str) -> str:
    """A trigger as compared: "Ink_Wash-Style!!" -> "ink wash style", "Café" -> "café"."""
    return " ".join(word_text(text).split())


@dataclass(frozen=True)
class TriggerEntry:
    normalized: str
    original: str
    source: TriggerSource


def _values(values: list[str] | None) -> list[str]:
    # The columns are JSON: tolerate numbers or nulls a hand-edited sidecar put in the list.
    return [str(value) for value in values or [] if value is not None]


def trigger_entries(adapter: Adapter) -> list[TriggerEntry]:
    """Every trigger of the adapter, trained words first, then triggers, then the activation
    text split on commas; one entry per normalized form, the first source's spelling kept."""
    sources: list[tuple[TriggerSource, list[str]]] = [
        ("trained_words", _values(adapter.trained_words)),
        ("triggers", _values(adapter.triggers)),
        ("activation_text", (adapter.activation_text or "").split(",")),
    ]
    entries: list[TriggerEntry] = []
    seen: set[str] = set()
    for source, values in sources:
        for value in values:
            original = value.strip()
            normalized = normalize_trigger(original)
            if not normalized or normalized in seen:
                continue
            seen.add(normalized)
            entries.append(TriggerEntry(normalized, original, source))
    return entries


def trigger_aliases(entries: list[TriggerEntry]) -> dict[str, list[str]]:
    """For each normalized trigger, the other spellings people type: the form without spaces
    ("ink wash" -> "inkwash") and the originals lower-cased when they differ; every key is
    present (an empty list when there is no other spelling)."""
    aliases: dict[str, set[str]] = {}
    for entry in entries:
        spellings = aliases.setdefault(entry.normalized, set())
        spellings.add(entry.normalized.replace(" ", ""))
        spellings.add(entry.original.strip().lower())
    return {
        key: sorted(spelling for spelling in spellings if spelling and spelling != key)
        for key, spellings in aliases.items()
    }


def strip_html(text: str) -> str:
    """Plain text of an HTML fragment: tags gone, entities decoded, whitespace collapsed."""
    text = _SCRIPT_OR_STYLE.sub(" ", text)
    text = _COMMENT.sub(" ", text)
    # A space, not nothing: "<p>a</p><p>b</p>" is two words, not "ab".
    text = _TAG.sub(" ", text)
    return " ".join(html.unescape(text).split())


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    # End on a word boundary when there is one, so no half word adds stray n-grams.
    head, space, _ = cut.rpartition(" ")
    return head if space and head else cut


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    result: list[str] = []
    for value in values:
        value = " ".join(value.split())
        key = value.casefold()
        if value and key not in seen:
            seen.add(key)
            result.append(value)
    return result


def adapter_text(adapter: Adapter) -> str:
    """What an embedder reads for an adapter, one part a line in a fixed order: the name twice
    (it says most about the adapter), tags and user tags, triggers, base model, author, and
    the description as plain text cut to DESCRIPTION_LIMIT characters.

    Parts carry no labels ("tags:" and the like): a word every adapter shares would only pull
    all vectors together.
    """
    name = " ".join((adapter.name or "").split())
    tags = _unique(_values(adapter.tags) + _values(adapter.user_tags))
    triggers = [entry.original for entry in trigger_entries(adapter)]
    # base_model is the catalog's field; sd_version (A1111's coarse category) only fills a gap.
    base_model = adapter.base_model or adapter.sd_version or ""
    description = _cut(strip_html(adapter.description or ""), DESCRIPTION_LIMIT)
    parts = [
        name,
        name,
        ", ".join(tags),
        ", ".join(triggers),
        " ".join(base_model.split()),
        " ".join((adapter.author_username or "").split()),
        description,
    ]
    return "\n".join(part for part in parts if part)


def source_hash(text: str, model: str) -> str:
    """Identifies what a stored vector was made from: a new text or a new model changes it."""
    return hashlib.sha256(f"{model}\n{text}".encode()).hexdigest()
