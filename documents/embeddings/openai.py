"""Embeddings from OpenAI's /v1/embeddings endpoint, or any server that
speaks the same wire format."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from .base import (
    Embedding,
    PermanentEmbeddingError,
    estimate_tokens,
    reject_empty_inputs,
    truncate_to_estimate,
)
from .http import DEFAULT_RETRY, Budget, JsonHttpClient, RetryPolicy, request_slices, validate_vectors

if TYPE_CHECKING:
    import tiktoken

logger = logging.getLogger(__name__)

# model: (native dimensions, accepts the "dimensions" parameter)
_KNOWN_MODELS: dict[str, tuple[int, bool]] = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}
# OpenAI's documented input limit for every embedding model above.
_DEFAULT_MAX_INPUT_TOKENS = 8191
# OpenAI's documented per-request limits for the embeddings endpoint.
_MAX_INPUTS_PER_REQUEST = 2048
_MAX_TOKENS_PER_REQUEST = 300_000
# tiktoken fetches its BPE tables over plain `requests` with no timeout the
# first time an encoding is used; on a host that cannot reach the internet
# that can hang for minutes, so the load is waited on for at most this long.
_ENCODING_LOAD_SECONDS = 10.0

_encodings: dict[str, tiktoken.Encoding | None] = {}
_encodings_lock = threading.Lock()


def _load_encoding(model: str) -> tiktoken.Encoding | None:
    """tiktoken's encoding for `model` (cl100k_base for names it does not
    know), or None when tiktoken or its BPE table cannot be had. Decided
    once per process, so every count in a process uses the same method."""
    try:
        import tiktoken
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        encoding_name = encoding_name_for_model(model)
    except KeyError:
        encoding_name = "cl100k_base"
    with _encodings_lock:
        if encoding_name in _encodings:
            return _encodings[encoding_name]
        loaded: list[tiktoken.Encoding] = []

        def load() -> None:
            try:
                loaded.append(tiktoken.get_encoding(encoding_name))
            except Exception as exc:  # noqa: BLE001 - any failure means "no tokenizer"
                logger.warning(
                    "tiktoken %s unavailable (%s); OpenAI token counts are estimates",
                    encoding_name,
                    exc,
                )

        loader = threading.Thread(target=load, name=f"tiktoken-{encoding_name}", daemon=True)
        loader.start()
        loader.join(_ENCODING_LOAD_SECONDS)
        if not loaded and loader.is_alive():
            logger.warning(
                "tiktoken %s did not load within %ss; OpenAI token counts are estimates",
                encoding_name,
                _ENCODING_LOAD_SECONDS,
            )
        _encodings[encoding_name] = loaded[0] if loaded else None
        return _encodings[encoding_name]


class OpenAIEmbedder:
    """POST {base_url}/embeddings with {"model", "input": [...],
    "encoding_format": "float"}, plus "dimensions" for the text-embedding-3
    models, which can shorten their vectors. Vectors are put back in input
    order by each item's "index".

    Token counting uses tiktoken when its BPE table can be loaded: that
    needs the table in tiktoken's cache (TIKTOKEN_CACHE_DIR) or a reachable
    internet, since tiktoken downloads it on first use and ships none. Where
    it cannot load (as on an offline host), `count_tokens` falls back to
    `estimate_tokens`, which errs high. `tokenizer` says which is in use.

    Truncation: the API rejects an input over the model's limit (HTTP 400)
    instead of truncating it, and that would fail the whole batch. So an
    over-long text is cut on the client to `max_input_tokens` (exactly with
    tiktoken, to the estimate otherwise, which then leaves it shorter than
    the real limit) and its Embedding is marked `truncated=True`.
    """

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str = "",
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        max_input_tokens: int | None = None,
        timeout: float = 60.0,
        max_batch_size: int = _MAX_INPUTS_PER_REQUEST,
        max_request_tokens: int = _MAX_TOKENS_PER_REQUEST,
        budget: Budget | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        encoding: tiktoken.Encoding | Literal["auto"] | None = "auto",
    ) -> None:
        """`dimensions` defaults to the model's native size and is required
        for models not listed in _KNOWN_MODELS. `encoding` "auto" loads
        tiktoken's encoding for the model on first use; None always
        estimates; an Encoding is used as given."""
        native_dimensions, accepts_dimensions = _KNOWN_MODELS.get(model, (None, False))
        if dimensions is None:
            if native_dimensions is None:
                raise ValueError(f"dimensions must be given for the unknown model {model!r}")
            dimensions = native_dimensions
        self.model_id = model
        self.dimensions = dimensions
        self.max_input_tokens = max_input_tokens or _DEFAULT_MAX_INPUT_TOKENS
        self.url = base_url.rstrip("/") + "/embeddings"
        self.max_batch_size = max_batch_size
        self.max_request_tokens = max_request_tokens
        self._send_dimensions = accepts_dimensions
        self._retry = retry
        self._encoding_choice = encoding
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = JsonHttpClient(provider=self.name, timeout=timeout, headers=headers, budget=budget)

    @property
    def tokenizer(self) -> str:
        """ "tiktoken:<encoding>" or "estimate"."""
        encoding = self._encoding()
        return f"tiktoken:{encoding.name}" if encoding is not None else "estimate"

    def count_tokens(self, text: str) -> int:
        encoding = self._encoding()
        if encoding is None:
            return estimate_tokens(text)
        return len(encoding.encode(text, disallowed_special=()))

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        reject_empty_inputs(texts)
        fitted = [self._fit(text) for text in texts]
        token_counts = [count for _, count, _ in fitted]
        embeddings: list[Embedding] = []
        for start, end in request_slices(
            len(texts),
            max_items=self.max_batch_size,
            token_counts=token_counts,
            max_tokens=self.max_request_tokens,
        ):
            batch = [text for text, _, _ in fitted[start:end]]
            vectors = self._retry.call(lambda batch=batch: self._request(batch))
            embeddings.extend(
                Embedding(vector=vector, truncated=truncated)
                for vector, (_, _, truncated) in zip(vectors, fitted[start:end], strict=False)
            )
        return embeddings

    def _encoding(self) -> tiktoken.Encoding | None:
        if self._encoding_choice == "auto":
            self._encoding_choice = _load_encoding(self.model_id)
        return self._encoding_choice

    def _fit(self, text: str) -> tuple[str, int, bool]:
        """(text to send, its token count, whether it was cut)."""
        encoding = self._encoding()
        limit = self.max_input_tokens
        if encoding is None:
            count = estimate_tokens(text)
            if count <= limit:
                return text, count, False
            cut = truncate_to_estimate(text, limit)
            return cut, estimate_tokens(cut), True
        tokens = encoding.encode(text, disallowed_special=())
        if len(tokens) <= limit:
            return text, len(tokens), False
        # Decoding a prefix can split a multi-byte character, and re-encoding
        # the replacement character can cost more tokens; step back until the
        # text as sent really fits.
        keep = limit
        while True:
            cut = encoding.decode(tokens[:keep])
            count = len(encoding.encode(cut, disallowed_special=()))
            if count <= limit:
                return cut, count, True
            keep -= 1

    def _request(self, batch: list[str]) -> list[list[float]]:
        payload: dict[str, Any] = {
            "model": self.model_id,
            "input": batch,
            "encoding_format": "float",
        }
        if self._send_dimensions:
            payload["dimensions"] = self.dimensions
        body = self._http.post(self.url, payload)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise PermanentEmbeddingError(f'{self.name}: response has no "data" list')
        try:
            ordered = sorted(data, key=lambda item: item["index"])
            indices = [item["index"] for item in ordered]
            vectors = [item["embedding"] for item in ordered]
        except (KeyError, TypeError) as exc:
            raise PermanentEmbeddingError(f'{self.name}: response items lack "index" or "embedding"') from exc
        if len(vectors) == len(batch) and indices != list(range(len(batch))):
            raise PermanentEmbeddingError(
                f"{self.name}: response indices {indices[:10]} do not match the {len(batch)} inputs"
            )
        return validate_vectors(
            vectors,
            expected_count=len(batch),
            dimensions=self.dimensions,
            provider=self.name,
        )
