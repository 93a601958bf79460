"""Ranking: similarity first, then what the user told us, as small documented boosts.

    score = similarity
          + RATING_STEP x (rating - 3)              rated adapters: -0.06 ... +0.06
          + FAVORITE                                starred
          + LIKED x min(positive feedback, 3)       "positive" or "used" on earlier suggestions
          - DISLIKED x min(negative feedback, 3)    "negative" or "dismissed"
          + PREFERENCE x weight                     per matching preference (tag, base model,
                                                    author; weight -1 ... 1)

Boosts are small next to similarity (cosine, 0 ... 1), so they reorder close candidates and never
lift an unrelated adapter over a related one; each one is reported as a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lora_manager.recommendations.repository import Preference, Signals

RATING_STEP = 0.03
FAVORITE = 0.05
LIKED = 0.04
DISLIKED = 0.08
PREFERENCE = 0.08
FEEDBACK_CAP = 3


@dataclass
class Candidate:
    adapter_id: str
    similarity: float
    reasons: list[str] = field(default_factory=list)
    # Evidence other than similarity (a trigger word typed in the prompt), added to the score.
    bonus: float = 0.0


@dataclass
class Ranked:
    adapter_id: str
    similarity: float
    score: float
    reasons: list[str] = field(default_factory=list)


def _matches(preference: Preference, signal: Signals) -> bool:
    value = preference.preference_value.strip().lower()
    adapter = signal.adapter
    if preference.preference_type == "tag":
        return value in adapter.tags
    if preference.preference_type == "base_model":
        return (adapter.base_model or "").lower() == value
    if preference.preference_type == "author":
        return (adapter.author_username or "").lower() == value
    return False


def boost(signal: Signals, prefs: Sequence[Preference]) -> tuple[float, list[str]]:
    """The sum of an adapter's boosts, with a reason for each."""
    total, reasons = 0.0, []
    adapter = signal.adapter
    if adapter.rating is not None:
        total += RATING_STEP * (adapter.rating - 3)
        reasons.append(f"you rated it {adapter.rating}/5")
    if adapter.is_favorite:
        total += FAVORITE
        reasons.append("one of your favourites")
    if signal.positives:
        total += LIKED * min(signal.positives, FEEDBACK_CAP)
        reasons.append(f"you liked it before ({signal.positives}x)")
    if signal.negatives:
        total -= DISLIKED * min(signal.negatives, FEEDBACK_CAP)
        reasons.append(f"you turned it down before ({signal.negatives}x)")
    for preference in prefs:
        if _matches(preference, signal):
            total += PREFERENCE * preference.confidence
            verb = "you prefer" if preference.confidence >= 0 else "you avoid"
            reasons.append(f"{verb} {preference.preference_type} {preference.preference_value!r}")
    return total, reasons


def rank(
    candidates: Sequence[Candidate],
    signals: dict[str, Signals],
    prefs: Sequence[Preference],
    limit: int,
) -> list[Ranked]:
    """Order candidates by similarity plus their bonus plus the boosts."""
    ranked = []
    for candidate in candidates:
        signal = signals.get(candidate.adapter_id)
        if signal is None:  # deleted since the index loaded it
            continue
        extra, why = boost(signal, prefs)
        score = candidate.similarity + candidate.bonus + extra
        reasons = [*candidate.reasons, *why]
        ranked.append(Ranked(candidate.adapter_id, candidate.similarity, score, reasons))
    ranked.sort(key=lambda item: (-item.score, item.adapter_id))
    return ranked[:limit]
