"""An embedder that counts its provider calls, for the reindex benchmark.
Same vectors and model id as `hash`; the counts go to the benchmark's Redis
database, where the benchmark process reads what the workers did."""

from __future__ import annotations

from collections.abc import Sequence

import redis
from django.conf import settings

from documents.embeddings.base import Embedding
from documents.embeddings.hashing import HashEmbedder

CALLS_KEY = "bench:embedder:calls"
TEXTS_KEY = "bench:embedder:texts"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.MIRAGE_REDIS_URL)


class CountingEmbedder(HashEmbedder):
    name = "counting"

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        pipe = _redis().pipeline(transaction=False)
        pipe.incr(CALLS_KEY)
        pipe.incrby(TEXTS_KEY, len(texts))
        pipe.execute()
        return super().embed_batch(texts)


def counts() -> tuple[int, int]:
    """(provider calls, texts embedded) since the last reset."""
    calls, texts = _redis().mget(CALLS_KEY, TEXTS_KEY)
    return int(calls or 0), int(texts or 0)


def reset_counts() -> None:
    _redis().delete(CALLS_KEY, TEXTS_KEY)
