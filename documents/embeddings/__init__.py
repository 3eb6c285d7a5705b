"""Embedding providers: plain Python, texts in, vectors out.

`get_embedder()` returns the configured provider; the provider modules
(hashing, local, ollama, openai) are imported only when asked for, so
importing this package never loads torch.
"""

from .base import (
    Embedder,
    Embedding,
    EmbeddingError,
    PermanentEmbeddingError,
    TransientEmbeddingError,
)
from .registry import clear_embedder_cache, get_batcher, get_embedder

__all__ = [
    "Embedder",
    "Embedding",
    "EmbeddingError",
    "PermanentEmbeddingError",
    "TransientEmbeddingError",
    "clear_embedder_cache",
    "get_batcher",
    "get_embedder",
]
