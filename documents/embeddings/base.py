"""The embedding interface. Plain Python: texts in, vectors out; no models,
no Celery."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


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
    """Batch-first: one call embeds many texts, in order.

    Token figures count text tokens only: any special tokens a model adds
    around its input (BERT's [CLS]/[SEP]) are already subtracted from
    `max_input_tokens`, so a text fits the model exactly when
    `count_tokens(text) <= max_input_tokens`, and counts of adjacent pieces
    add up (give or take a token at the seam) for a chunker sizing windows.
    Where no exact tokenizer is available `count_tokens` is an estimate that
    errs high (see `estimate_tokens`).
    """

    name: str  # provider key: hash, local, ollama, openai, ...
    model_id: str  # recorded on every chunk and pinned per project
    dimensions: int
    max_input_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]: ...


def reject_empty_inputs(texts: Sequence[str]) -> None:
    """Raise PermanentEmbeddingError when any text is empty or only
    whitespace: such a chunk is a parser or chunker bug, and providers either
    reject it or return a meaningless vector for it."""
    for index, text in enumerate(texts):
        if not text or text.isspace():
            where = "" if len(texts) == 1 else f" at index {index} of {len(texts)}"
            raise PermanentEmbeddingError(f"empty input{where}")


# A word or one punctuation character: BERT's basic tokenizer makes every
# punctuation character its own token, and byte-level BPE rarely merges
# across a word boundary.
_ESTIMATE_PIECES = re.compile(r"\w+|[^\w\s]")
# Common words are one token, but rare words, identifiers and numbers break
# into pieces of about three characters in both WordPiece and BPE vocabularies.
_CHARS_PER_PIECE = 3


def _piece_cost(piece: str) -> int:
    ascii_chars = len(piece.encode("ascii", "ignore"))
    # Outside ASCII (CJK, accented letters, emoji) count a token per character:
    # BERT splits CJK ideographs one per token and BPE often needs more than
    # one byte-pair per character.
    return max(1, math.ceil(ascii_chars / _CHARS_PER_PIECE) + len(piece) - ascii_chars)


def estimate_tokens(text: str) -> int:
    """Token count for a model whose tokenizer is not available here.

    Errs high on purpose: on English prose and Python source it comes out
    1.2 to 1.4 times BERT's WordPiece count (never under it, paragraph by
    paragraph, on the samples measured), and byte-level BPE such as
    cl100k_base needs fewer tokens than WordPiece for both. A chunker that
    sizes windows with this estimate therefore never overfills the model, and
    a provider that flags `truncated` from it never misses a real truncation.
    Not a strict bound for exotic scripts, where a single character can be
    several byte-level tokens.
    """
    return sum(_piece_cost(match.group()) for match in _ESTIMATE_PIECES.finditer(text))


def truncate_to_estimate(text: str, max_tokens: int) -> str:
    """The longest prefix of `text` whose `estimate_tokens` is at most
    `max_tokens`, cut at a word or punctuation boundary where possible."""
    used = 0
    for match in _ESTIMATE_PIECES.finditer(text):
        cost = _piece_cost(match.group())
        if used + cost > max_tokens:
            if used > 0:
                return text[: match.start()].rstrip()
            # The first piece alone is over budget: cut inside it.
            prefix_end = match.start()
            ascii_chars = other_chars = 0
            for offset, char in enumerate(match.group()):
                if char.isascii():
                    ascii_chars += 1
                else:
                    other_chars += 1
                if math.ceil(ascii_chars / _CHARS_PER_PIECE) + other_chars > max_tokens:
                    break
                prefix_end = match.start() + offset + 1
            return text[:prefix_end]
        used += cost
    return text
