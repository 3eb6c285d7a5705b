"""An in-process micro-batcher: concurrent callers (a worker's embed_chunk
tasks running on threads) each ask for one text, and one provider call
embeds them together.

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
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from .base import Embedder, Embedding, PermanentEmbeddingError

_announced_lock = threading.Lock()
_announced = 0
_thread = threading.local()
# Every batcher of the process is woken when an announced caller gives up
# (its chunk was already done, or cached), so nobody waits for it.
_batchers: weakref.WeakSet[MicroBatcher] = weakref.WeakSet()


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


class MicroBatcher:
    def __init__(self, embedder: Embedder, *, max_batch: int = 64, max_wait_seconds: float = 0.01) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self._condition = threading.Condition()
        self._waiting: list[tuple[str, Future]] = []
        self._leader_busy = False
        self.batches = 0
        self.texts = 0
        _batchers.add(self)

    def embed(self, text: str) -> Embedding:
        """Embed one text, batched with whatever else arrives meanwhile.
        Raises what the provider raised for this text."""
        future: Future = Future()
        with self._condition:
            self._waiting.append((text, future))
            _withdraw()
            self._condition.notify_all()
            lead = not self._leader_busy
            if lead:
                self._leader_busy = True
        if lead:
            self._lead()
        return future.result()

    def _lead(self) -> None:
        """The first caller to arrive runs batches until nothing is waiting;
        no extra thread, so nothing to start after a fork."""
        try:
            while True:
                with self._condition:
                    deadline = time.monotonic() + self.max_wait_seconds
                    # Wait only while announced callers have yet to arrive.
                    while (
                        self._waiting
                        and len(self._waiting) < self.max_batch
                        and _announced > 0
                        and time.monotonic() < deadline
                    ):
                        self._condition.wait(timeout=max(0.0, deadline - time.monotonic()))
                    batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                    if not batch:
                        self._leader_busy = False
                        return
                self._run(batch)
        except BaseException:
            with self._condition:
                self._leader_busy = False
            raise

    def _run(self, batch: list[tuple[str, Future]]) -> None:
        texts = [text for text, _ in batch]
        try:
            results = self.embedder.embed_batch(texts)
        except PermanentEmbeddingError as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            # One bad input must not fail its neighbours: find it alone.
            for text, future in batch:
                self._run_single(text, future)
            return
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
            for _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        self.texts += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _run_single(self, text: str, future: Future) -> None:
        try:
            future.set_result(self.embedder.embed_batch([text])[0])
        except BaseException as exc:  # noqa: BLE001
            future.set_exception(exc)
