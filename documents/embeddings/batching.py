"""An in-process micro-batcher: concurrent callers (a worker's embed_chunk
tasks running on threads) each ask for one text, and one provider call
embeds them together (a Coalescer, documents/coalescing.py).

Models and HTTP providers are far faster per text in batches, while the
pipeline keeps one task per chunk for truthful per-chunk status and retries.
The batcher waits for more texts only while other callers are known to be on
their way (`expecting()`), and never longer than `max_wait_seconds`, so a lone
caller pays no delay.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager

from documents.coalescing import Coalescer

from .base import Embedder, Embedding, PermanentEmbeddingError

_announced_lock = threading.Lock()
_announced = 0
_thread = threading.local()
# Every batcher of the process is woken when an announced caller gives up
# (its chunk was already done, or cached), so nobody waits for it.
_batchers: weakref.WeakSet[MicroBatcher] = weakref.WeakSet()

# Called after every provider call as observer(provider=..., seconds=...,
# texts=..., error=None or the exception). Monitoring appends its recorder
# here, so this module stays unaware of where figures go. An observer must
# not raise.
BatchObserver = Callable[..., None]
batch_observers: list[BatchObserver] = []


@contextmanager
def expecting() -> Iterator[None]:
    """Announce a caller that may call `embed` soon (it is claiming its
    chunk). While announced callers are missing, a batch waits for them.
    The announcement ends when the caller submits its text, or leaves
    without one."""
    global _announced
    with _announced_lock:
        _announced += 1
    _thread.announced = True
    try:
        yield
    finally:
        if _withdraw():
            for batcher in list(_batchers):
                with batcher._condition:
                    batcher._condition.notify_all()


def _withdraw() -> bool:
    """End this thread's announcement, if it has one; True if it had."""
    global _announced
    if not getattr(_thread, "announced", False):
        return False
    _thread.announced = False
    with _announced_lock:
        _announced -= 1
    return True


class MicroBatcher(Coalescer[str, Embedding]):
    """Texts of concurrent callers go to the embedder together. A batch
    waits for announced callers still on their way, never longer than
    `max_wait_seconds`."""

    def __init__(self, embedder: Embedder, *, max_batch: int = 64, max_wait_seconds: float = 0.01) -> None:
        super().__init__(self._embed_batch, max_batch=max_batch)
        self.embedder = embedder
        self.max_wait_seconds = max_wait_seconds
        _batchers.add(self)

    def embed(self, text: str) -> Embedding:
        """Embed one text, batched with whatever else arrives meanwhile.
        Raises what the provider raised for this text."""
        return self.submit(text)

    def _embed_batch(self, texts: Sequence[str]) -> list[Embedding]:
        """One provider call, timed for the observers."""
        started = time.perf_counter()
        try:
            embeddings = self.embedder.embed_batch(texts)
        except BaseException as exc:
            _observe(self.embedder, started, len(texts), exc)
            raise
        _observe(self.embedder, started, len(texts), None)
        return embeddings

    def _arrived(self) -> None:
        _withdraw()

    def _take(self) -> list[tuple[str, Future]]:
        deadline = time.monotonic() + self.max_wait_seconds
        # Wait only while announced callers have yet to arrive.
        while len(self._waiting) < self.max_batch and _announced > 0 and time.monotonic() < deadline:
            self._condition.wait(timeout=max(0.0, deadline - time.monotonic()))
        return super()._take()

    def _failed(self, batch: list[tuple[str, Future]], exc: BaseException) -> None:
        if isinstance(exc, PermanentEmbeddingError) and len(batch) > 1:
            # One bad input must not fail its neighbours: find it alone.
            for item in batch:
                self._run([item])
            return
        super()._failed(batch, exc)


def _observe(embedder: Embedder, started: float, texts: int, error: BaseException | None) -> None:
    seconds = time.perf_counter() - started
    for observer in batch_observers:
        observer(provider=embedder.name, seconds=seconds, texts=texts, error=error)
