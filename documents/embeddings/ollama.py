"""Embeddings from an Ollama server's /api/embed endpoint."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Embedding, estimate_tokens, reject_empty_inputs
from .http import DEFAULT_RETRY, Budget, JsonHttpClient, RetryPolicy, request_slices, validate_vectors


class OllamaEmbedder:
    """POST {base_url}/api/embed with {"model", "input": [...], "truncate": true}.

    Truncation: Ollama cuts an over-long input to the model's context itself
    (`truncate` defaults to true) and does not say which inputs it cut; its
    `prompt_eval_count` is one total for the whole batch. Sending
    `"truncate": false` instead would make one over-long chunk fail every
    other chunk of its batch, with an error that does not name it. So the
    server is left to truncate, and `truncated=True` is set for every text
    whose `count_tokens` exceeds `max_input_tokens`. Because that count is an
    estimate that errs high (the model's tokenizer is not available here), a
    real truncation is never missed; the price is that a text just under the
    real limit can be flagged too. A chunker that sizes its windows with the
    same `count_tokens` never produces such a text.

    `max_input_tokens` counts text tokens: mxbai-embed-large's context is 512
    word pieces including [CLS] and [SEP], hence the default of 510. Other
    models need `dimensions` and `max_input_tokens` given explicitly; a
    mismatch in `dimensions` is refused on the first response.
    """

    name = "ollama"

    def __init__(
        self,
        *,
        base_url: str = "http://127.0.0.1:11434",
        model: str = "mxbai-embed-large",
        dimensions: int = 1024,
        max_input_tokens: int = 510,
        timeout: float = 60.0,
        max_batch_size: int = 256,
        budget: Budget | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.model_id = model
        self.dimensions = dimensions
        self.max_input_tokens = max_input_tokens
        self.url = base_url.rstrip("/") + "/api/embed"
        self.max_batch_size = max_batch_size
        self._retry = retry
        self._http = JsonHttpClient(provider=self.name, timeout=timeout, budget=budget)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        reject_empty_inputs(texts)
        embeddings: list[Embedding] = []
        for start, end in request_slices(len(texts), max_items=self.max_batch_size):
            batch = list(texts[start:end])
            vectors = self._retry.call(lambda batch=batch: self._request(batch))
            embeddings.extend(
                Embedding(
                    vector=vector,
                    truncated=self.count_tokens(text) > self.max_input_tokens,
                )
                for text, vector in zip(batch, vectors, strict=False)
            )
        return embeddings

    def _request(self, batch: list[str]) -> list[list[float]]:
        body = self._http.post(self.url, {"model": self.model_id, "input": batch, "truncate": True})
        vectors = body.get("embeddings") if isinstance(body, dict) else None
        return validate_vectors(
            vectors,
            expected_count=len(batch),
            dimensions=self.dimensions,
            provider=self.name,
        )
