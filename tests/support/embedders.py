"""Embedders with scripted faults, for tests. They embed like `hash` (same
model id and dimensions) so a project pinned to `hash` can use them, and
they record every call in Redis so tests in another process can see them.

Select one with MIRAGE_EMBEDDER or a project's embedder, by dotted path.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence

import redis
from django.conf import settings

from documents.embeddings.base import Embedding, PermanentEmbeddingError, TransientEmbeddingError
from documents.embeddings.hashing import HashEmbedder

CALLS_KEY = "mirage:test:embed-calls"
POISON = "POISON-PILL"
CURED_KEY = "mirage:test:poison-cured"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.MIRAGE_REDIS_URL)


class RecordingEmbedder(HashEmbedder):
    """Records each text it is asked to embed (with a timestamp) and can be
    slowed down with MIRAGE_TEST_EMBED_DELAY seconds per call."""

    name = "recording"

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        client = _redis()
        now = time.time()
        for text in texts:
            client.rpush(CALLS_KEY, f"{now:.6f}|{text[:200]}")
        delay = float(os.environ.get("MIRAGE_TEST_EMBED_DELAY", "0"))
        if delay:
            time.sleep(delay)
        return super().embed_batch(texts)


class PoisonEmbedder(RecordingEmbedder):
    """Fails permanently on any text containing POISON, until a test cures
    the provider with `cure_poison()`."""

    name = "poison"

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        if any(POISON in text for text in texts) and not _redis().exists(CURED_KEY):
            raise PermanentEmbeddingError("the provider rejected the input (400: invalid input)")
        return super().embed_batch(texts)


class FlakyEmbedder(RecordingEmbedder):
    """Fails transiently on a share of calls (MIRAGE_TEST_FAILURE_RATE, default 0.3)."""

    name = "flaky"

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        if random.random() < float(os.environ.get("MIRAGE_TEST_FAILURE_RATE", "0.3")):
            raise TransientEmbeddingError("503 Service Unavailable (injected)")
        return super().embed_batch(texts)


def recorded_calls() -> list[tuple[float, str]]:
    calls = []
    for raw in _redis().lrange(CALLS_KEY, 0, -1):
        stamp, _, text = raw.decode().partition("|")
        calls.append((float(stamp), text))
    return calls


def reset_calls() -> None:
    _redis().delete(CALLS_KEY)


def cure_poison(cured: bool = True) -> None:
    if cured:
        _redis().set(CURED_KEY, 1)
    else:
        _redis().delete(CURED_KEY)


class WrongDimensionsEmbedder(HashEmbedder):
    """Claims the hash model's 384 dimensions but returns 256 (a provider
    misconfigured on the server side)."""

    name = "wrong-dimensions"

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        return [Embedding(vector=result.vector[:256]) for result in super().embed_batch(texts)]


class SteadyEmbedder(HashEmbedder):
    """Takes 50 ms per text, however the texts are batched: a run whose speed
    does not depend on the machine's load, for testing estimates."""

    name = "steady"
    SECONDS_PER_TEXT = 0.05

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        time.sleep(self.SECONDS_PER_TEXT * len(texts))
        return super().embed_batch(texts)


class Hash256Embedder(HashEmbedder):
    """The hash embedder under another model id and dimension count
    (`hash-256`): a second model to migrate a `hash` project to. Takes
    MIRAGE_TEST_EMBED_DELAY seconds per call when set, so a migration lasts
    long enough to be watched."""

    name = "hash-256"

    def __init__(self) -> None:
        super().__init__(dimensions=256)

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        delay = float(os.environ.get("MIRAGE_TEST_EMBED_DELAY", "0"))
        if delay:
            time.sleep(delay)
        return super().embed_batch(texts)
