"""Coalescing: concurrent callers in one process each hand over one item,
and one of them runs a single operation over every item waiting.

A worker's `embed_chunk` tasks run on threads. Each claims its chunk, embeds
its text and stores its vector; done one by one, every step is a round trip
and a statement (or a model call) per chunk. Through a Coalescer, the tasks
that arrive while one operation runs are served together by the next one:
one claim statement, one model call, one store statement for all of them,
while each task still gets its own result (or its own exception).

No thread of its own: the first caller to find no operation running leads
one batch (its own item included), then hands over to a caller still
waiting. A lone caller runs its item at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`run_batch(items)` returns one result per item, in order; if it
    raises, every caller of that batch gets the exception."""

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], *, max_batch: int = 64) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.batches = 0
        self.items = 0
        self._reset()

    def _reset(self) -> None:
        # Locks are not shared with a forked child (a prefork worker process).
        self._pid = os.getpid()
        self._condition = threading.Condition()
        self._waiting: list[tuple[T, Future]] = []
        self._leader_busy = False

    def submit(self, item: T) -> R:
        """Run `item` in the next batch and return its result (or raise its
        exception)."""
        if self._pid != os.getpid():
            self._reset()
        future: Future = Future()
        with self._condition:
            self._waiting.append((item, future))
            self._arrived()
            self._condition.notify_all()
            while not future.done():
                if self._leader_busy:
                    self._condition.wait()
                    continue
                self._leader_busy = True
                try:
                    batch = self._take()
                    self._condition.release()
                    try:
                        self._run(batch)
                    finally:
                        self._condition.acquire()
                finally:
                    self._leader_busy = False
                    self._condition.notify_all()
        return future.result()

    # Hooks for subclasses; the first two run with the lock held.

    def _arrived(self) -> None:
        """A caller has just added its item."""

    def _take(self) -> list[tuple[T, Future]]:
        """The next batch, oldest first."""
        batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        return batch

    def _run(self, batch: list[tuple[T, Future]]) -> None:
        try:
            results = self.run_batch([item for item, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to the batch's callers
            self._failed(batch, exc)
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _failed(self, batch: list[tuple[T, Future]], exc: BaseException) -> None:
        """`run_batch` raised: by default every caller of the batch gets it."""
        for _, future in batch:
            future.set_exception(exc)
