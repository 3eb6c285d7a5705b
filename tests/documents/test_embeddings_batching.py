import threading

import pytest

from documents.embeddings.base import Embedding, PermanentEmbeddingError, TransientEmbeddingError
from documents.embeddings.batching import MicroBatcher, expecting

pytestmark = pytest.mark.unit


class CountingEmbedder:
    name = "counting"
    model_id = "counting-2"
    dimensions = 2
    max_input_tokens = 100

    def __init__(self, *, fail_on=None, transient=False):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.transient = transient

    def count_tokens(self, text):
        return len(text.split())

    def embed_batch(self, texts):
        self.calls.append(list(texts))
        if self.transient:
            raise TransientEmbeddingError("503")
        if self.fail_on and any(self.fail_on in text for text in texts):
            raise PermanentEmbeddingError(f"rejected {self.fail_on}")
        return [Embedding(vector=[float(len(text)), 1.0]) for text in texts]


def run_callers(batcher, texts):
    results: dict[str, object] = {}
    barrier = threading.Barrier(len(texts))

    def call(text):
        with expecting():
            barrier.wait()
            try:
                results[text] = batcher.embed(text)
            except Exception as exc:  # noqa: BLE001
                results[text] = exc

    threads = [threading.Thread(target=call, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_callers_share_provider_calls_and_get_their_own_vectors():
    embedder = CountingEmbedder()
    # A generous wait: the batch goes as soon as every announced caller has
    # arrived, so the bound is only a safety net.
    batcher = MicroBatcher(embedder, max_batch=64, max_wait_seconds=60)
    texts = [f"text number {i}" * (i + 1) for i in range(16)]

    results = run_callers(batcher, texts)

    assert all(results[text].vector == [float(len(text)), 1.0] for text in texts)
    assert [sorted(call) for call in embedder.calls] == [sorted(texts)]


def waits_of(batcher) -> list:
    """Record every time the batcher would block waiting for other callers."""
    waits = []
    wait = batcher._condition.wait

    def recorded(timeout=None):
        waits.append(timeout)
        return wait(timeout)

    batcher._condition.wait = recorded
    return waits


def test_a_lone_caller_is_not_delayed():
    embedder = CountingEmbedder()
    batcher = MicroBatcher(embedder, max_wait_seconds=5.0)
    waits = waits_of(batcher)
    with expecting():
        assert batcher.embed("alone").vector == [5.0, 1.0]
    assert waits == []


def test_one_rejected_text_does_not_fail_its_neighbours():
    embedder = CountingEmbedder(fail_on="bad")
    batcher = MicroBatcher(embedder, max_wait_seconds=0.5)
    results = run_callers(batcher, ["good one", "bad one", "good two"])
    assert isinstance(results["bad one"], PermanentEmbeddingError)
    assert results["good one"].vector[0] == 8.0
    assert results["good two"].vector[0] == 8.0


def test_a_transient_failure_reaches_every_caller_of_the_batch():
    batcher = MicroBatcher(CountingEmbedder(transient=True), max_wait_seconds=0.5)
    results = run_callers(batcher, ["a", "b", "c"])
    assert all(isinstance(result, TransientEmbeddingError) for result in results.values())


def test_batches_never_exceed_the_maximum():
    embedder = CountingEmbedder()
    batcher = MicroBatcher(embedder, max_batch=4, max_wait_seconds=0.5)
    run_callers(batcher, [f"t{i}" for i in range(12)])
    assert max(len(call) for call in embedder.calls) <= 4
    assert sum(len(call) for call in embedder.calls) == 12


def test_a_caller_that_already_submitted_is_not_waited_for():
    """A task still storing its vector (inside `expecting`, past `embed`)
    must not hold back the next batch."""
    embedder = CountingEmbedder()
    batcher = MicroBatcher(embedder, max_wait_seconds=5.0)
    submitted, release = threading.Event(), threading.Event()

    def earlier_task():
        with expecting():
            batcher.embed("first")
            submitted.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=earlier_task)
    thread.start()
    try:
        assert submitted.wait(timeout=10)
        waits = waits_of(batcher)
        with expecting():
            assert batcher.embed("second").vector == [6.0, 1.0]
        assert waits == []
    finally:
        release.set()
        thread.join(timeout=10)
