"""A deterministic lexical embedder for tests and development: no model, no
network, same vector for the same text on every machine and Python build."""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence

from .base import Embedding, reject_empty_inputs

_WORD = re.compile(r"\w+")
# Text with no word characters at all ("!!!", "-> <-") still gets a vector
# from its symbol runs rather than failing.
_SYMBOLS = re.compile(r"[^\w\s]+")
_TRIGRAM_WEIGHT = 0.25


def _tokens(text: str) -> list[str]:
    lowered = text.lower()
    return _WORD.findall(lowered) or _SYMBOLS.findall(lowered)


def _bucket_and_sign(feature: str, dimensions: int) -> tuple[int, float]:
    # blake2b rather than hash(): str hashes are salted per process, and the
    # vector must be the same in every worker and every test run.
    value = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "big")
    return value % dimensions, 1.0 if value >> 63 else -1.0


@functools.lru_cache(maxsize=65536)
def _word_features(word: str, dimensions: int) -> tuple[tuple[int, float], ...]:
    """A word's signed bucket weights, merged: the word itself at full weight
    and its boundary-marked character trigrams at a lower one, so that
    inflections ("embed", "embedding") still land near each other. Cached
    because vocabulary repeats heavily across chunks and hashing dominates."""
    features: dict[int, float] = {}
    bucket, sign = _bucket_and_sign("w:" + word, dimensions)
    features[bucket] = sign
    marked = f"<{word}>"
    for start in range(len(marked) - 2):
        bucket, sign = _bucket_and_sign("t:" + marked[start : start + 3], dimensions)
        features[bucket] = features.get(bucket, 0.0) + sign * _TRIGRAM_WEIGHT
    return tuple(features.items())


class HashEmbedder:
    """Signed feature hashing of lowercased word tokens and their character
    trigrams into a fixed number of buckets, L2-normalised. Texts that share
    words score a higher cosine similarity than unrelated texts; meaning beyond
    shared surface forms is not captured. Never truncates."""

    name = "hash"

    def __init__(self, *, dimensions: int = 384, max_input_tokens: int = 8192) -> None:
        self.dimensions = dimensions
        self.model_id = f"hash-{dimensions}"
        self.max_input_tokens = max_input_tokens

    def count_tokens(self, text: str) -> int:
        return len(_tokens(text))

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        reject_empty_inputs(texts)
        return [Embedding(vector=self._embed(text)) for text in texts]

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word, occurrences in Counter(_tokens(text)).items():
            for bucket, weight in _word_features(word, self.dimensions):
                vector[bucket] += weight * occurrences
        norm = math.sqrt(sum(value * value for value in vector))
        if norm == 0.0:
            # Only reachable when every feature cancels out by collision; a
            # fixed unit vector keeps the output valid for cosine search.
            vector[0] = 1.0
            return vector
        return [value / norm for value in vector]
