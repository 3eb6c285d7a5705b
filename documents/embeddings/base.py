"""The embedding interface. Plain Python: texts in, vectors out; no models,
no Celery."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


class EmbeddingError(Exception):
    """Base class. The message is stored as the chunk's error, so it must say
    what went wrong in words."""


class TransientEmbeddingError(EmbeddingError):
    """Worth retrying: timeouts, connection errors, 5xx, 429."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentEmbeddingError(EmbeddingError):
    """Retrying cannot help: bad request, unknown model, wrong dimensions."""


@dataclass(frozen=True)
class Embedding:
    vector: list[float]
    # True when the provider had to cut the input to fit the model: the
    # chunk is then stored as `corrupted`.
    truncated: bool = False


class Embedder(Protocol):
    """Batch-first: one call embeds many texts, in order."""

    name: str  # provider key: hash, local, ollama, openai, ...
    model_id: str  # recorded on every chunk and pinned per project
    dimensions: int
    max_input_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]: ...
