"""What every HTTP embedding provider shares: one POST with a timeout, the
mapping of its failures onto Transient/PermanentEmbeddingError, a check of
the vectors that come back, and a short bounded retry loop.

The retry loop here only rides out blips within one call; the Celery layer
above retries a failed call again with its own, longer backoff.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx

from .base import PermanentEmbeddingError, TransientEmbeddingError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Enough of a provider's error body to say what went wrong without storing a
# whole HTML error page as a chunk's error.
_MAX_ERROR_CHARS = 300


class Budget(Protocol):
    """What an HTTP provider needs from a shared request budget
    (ratelimit.RequestBudget, or a fake in tests)."""

    def acquire(self, timeout: float) -> bool: ...


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: either delay-seconds or an
    HTTP-date. None when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def provider_error_message(response: httpx.Response) -> str:
    """The provider's own words for an error response: Ollama's
    {"error": "..."}, OpenAI's {"error": {"message": "..."}}, or the start of
    the body when it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            message = error.get("message") or error.get("type") or error.get("code")
        else:
            message = error
    if not message:
        message = response.text.strip() or response.reason_phrase or "no details"
    return " ".join(str(message).split())[:_MAX_ERROR_CHARS]


class JsonHttpClient:
    """POSTs JSON to one provider and returns the decoded JSON body, raising
    TransientEmbeddingError for what may pass (timeouts, connection failures,
    408, 429, 5xx, an exhausted request budget) and PermanentEmbeddingError
    for what will not (other 4xx, redirects, a body that is not JSON).

    Safe to share between threads. The underlying connection pool is opened
    lazily and again after a fork, so an instance cached before a prefork
    worker starts never shares sockets with its parent.
    """

    def __init__(
        self,
        *,
        provider: str,
        timeout: float,
        headers: dict[str, str] | None = None,
        budget: Budget | None = None,
        budget_timeout: float = 10.0,
    ) -> None:
        self.provider = provider
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._budget = budget
        self._budget_timeout = budget_timeout
        self._client: httpx.Client | None = None
        self._client_pid: int | None = None
        self._lock = threading.Lock()

    def post(self, url: str, payload: dict[str, Any]) -> Any:
        if self._budget is not None and not self._budget.acquire(self._budget_timeout):
            raise TransientEmbeddingError(
                f"{self.provider}: request budget exhausted; no slot free within {self._budget_timeout:g}s"
            )
        try:
            response = self._http().post(url, json=payload)
        except httpx.TimeoutException as exc:
            raise TransientEmbeddingError(
                f"{self.provider}: no response from {url} within {self.timeout:g}s ({type(exc).__name__})"
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise PermanentEmbeddingError(f"{self.provider}: unsupported URL {url}: {exc}") from exc
        except httpx.ConnectError as exc:
            raise TransientEmbeddingError(f"{self.provider}: cannot connect to {url}: {exc}") from exc
        except httpx.RequestError as exc:
            raise TransientEmbeddingError(
                f"{self.provider}: request to {url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except httpx.InvalidURL as exc:
            raise PermanentEmbeddingError(f"{self.provider}: invalid URL {url}: {exc}") from exc
        return self._decode(response)

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._client_pid == os.getpid():
                self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        pid = os.getpid()
        client = self._client
        if client is not None and self._client_pid == pid:
            return client
        with self._lock:
            if self._client is None or self._client_pid != pid:
                # A client inherited across fork is dropped, not closed:
                # closing would shut sockets the parent still uses.
                self._client = httpx.Client(timeout=self.timeout, headers=self._headers)
                self._client_pid = pid
            return self._client

    def _decode(self, response: httpx.Response) -> Any:
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise TransientEmbeddingError(
                f"{self.provider}: rate limited (HTTP 429): {provider_error_message(response)}",
                retry_after=retry_after,
            )
        if status == 408 or status >= 500:
            raise TransientEmbeddingError(
                f"{self.provider}: HTTP {status}: {provider_error_message(response)}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 400:
            raise PermanentEmbeddingError(f"{self.provider}: HTTP {status}: {provider_error_message(response)}")
        if status >= 300:
            raise PermanentEmbeddingError(
                f"{self.provider}: unexpected redirect (HTTP {status}) to "
                f"{response.headers.get('Location', 'nowhere')}; check the base URL"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentEmbeddingError(
                f"{self.provider}: response is not JSON (HTTP {status}, "
                f"{response.headers.get('Content-Type', 'no content type')}); check the base URL"
            ) from exc


def validate_vectors(vectors: Any, *, expected_count: int, dimensions: int, provider: str) -> list[list[float]]:
    """The provider's vectors as lists of floats, refusing a response that
    does not match the request: another number of vectors than inputs, or
    vectors of another length than the configured dimensions (which a
    database column of fixed width could not store anyway)."""
    if not isinstance(vectors, list):
        raise PermanentEmbeddingError(f"{provider}: response has no list of vectors")
    if len(vectors) != expected_count:
        raise PermanentEmbeddingError(
            f"{provider}: provider returned {len(vectors)} vectors for {expected_count} inputs"
        )
    checked: list[list[float]] = []
    for vector in vectors:
        if not isinstance(vector, list):
            raise PermanentEmbeddingError(f"{provider}: response vector is not a list of numbers")
        if len(vector) != dimensions:
            raise PermanentEmbeddingError(
                f"{provider}: provider returned {len(vector)}-dimensional vectors, expected {dimensions}"
            )
        try:
            checked.append([float(value) for value in vector])
        except (TypeError, ValueError) as exc:
            raise PermanentEmbeddingError(f"{provider}: response vector is not a list of numbers") from exc
    return checked


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int,
    base_delay: float,
    max_delay: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn` up to `attempts` times, retrying only TransientEmbeddingError.

    Between attempts it sleeps a full-jitter backoff, uniform in
    [0, min(max_delay, base_delay * 2**retry)], unless the error carries a
    `retry_after`, which is honoured exactly. A `retry_after` longer than
    `max_delay` is not waited out here: the error is raised at once, still
    carrying it, so the caller (a Celery retry) can schedule the next try
    without holding a worker. The last error is raised unchanged.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(attempts):
        try:
            return fn()
        except TransientEmbeddingError as exc:
            if attempt + 1 >= attempts:
                raise
            if exc.retry_after is not None:
                if exc.retry_after > max_delay:
                    raise
                delay = exc.retry_after
            else:
                delay = random.uniform(0.0, min(max_delay, base_delay * 2**attempt))
            logger.info("embedding request failed, retrying in %.2fs: %s", delay, exc)
            sleep(delay)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RetryPolicy:
    """How an HTTP provider retries one request (see `with_retries`)."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def call(self, fn: Callable[[], T]) -> T:
        return with_retries(
            fn, attempts=self.attempts, base_delay=self.base_delay, max_delay=self.max_delay, sleep=self.sleep
        )


DEFAULT_RETRY = RetryPolicy()


def request_slices(
    size: int,
    *,
    max_items: int,
    token_counts: Sequence[int] | None = None,
    max_tokens: int | None = None,
) -> list[tuple[int, int]]:
    """(start, end) slices of a batch of `size` texts such that each request
    respects a provider's limits on inputs per request and, when given, on
    the sum of `token_counts` per request. A single text over `max_tokens`
    still gets a request of its own."""
    slices: list[tuple[int, int]] = []
    start = 0
    tokens_in_slice = 0
    for index in range(size):
        cost = token_counts[index] if token_counts is not None else 0
        over_tokens = max_tokens is not None and tokens_in_slice + cost > max_tokens
        if index > start and (index - start >= max_items or over_tokens):
            slices.append((start, index))
            start = index
            tokens_in_slice = 0
        tokens_in_slice += cost
    if start < size:
        slices.append((start, size))
    return slices
