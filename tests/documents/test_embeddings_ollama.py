import pytest

from documents.embeddings.base import PermanentEmbeddingError, TransientEmbeddingError
from documents.embeddings.http import RetryPolicy
from documents.embeddings.ollama import OllamaEmbedder
from tests.support.http_servers import FAKE_DIMENSIONS, Reply, fake_vector

pytestmark = pytest.mark.unit

DIMENSIONS = FAKE_DIMENSIONS


@pytest.fixture
def embedder(server, delays):
    return OllamaEmbedder(
        base_url=server.ollama_url,
        model="mxbai-embed-large",
        dimensions=DIMENSIONS,
        timeout=0.5,
        retry=RetryPolicy(sleep=delays.append),
    )


def test_ollama_embeds_a_batch_in_input_order(embedder, server):
    texts = ["first chunk", "second chunk", "third chunk"]
    embeddings = embedder.embed_batch(texts)
    assert [e.vector for e in embeddings] == [fake_vector(t, DIMENSIONS) for t in texts]
    assert not any(e.truncated for e in embeddings)
    [request] = server.requests
    assert request.path == "/api/embed"
    assert request.json == {
        "model": "mxbai-embed-large",
        "input": texts,
        "truncate": True,
    }


def test_ollama_splits_large_batches_into_several_requests(server):
    embedder = OllamaEmbedder(base_url=server.ollama_url, dimensions=DIMENSIONS, max_batch_size=2)
    texts = [f"text {n}" for n in range(5)]
    embeddings = embedder.embed_batch(texts)
    assert [e.vector for e in embeddings] == [fake_vector(t, DIMENSIONS) for t in texts]
    assert [len(r.json["input"]) for r in server.requests] == [2, 2, 1]


def test_ollama_waits_out_a_429_for_the_retry_after(embedder, server, delays):
    server.script(Reply.rate_limited(retry_after="2"))
    [embedding] = embedder.embed_batch(["hello"])
    assert embedding.vector == fake_vector("hello", DIMENSIONS)
    assert delays == [2.0]
    assert len(server.requests) == 2


def test_ollama_retries_a_500_then_succeeds(embedder, server, delays):
    server.script(Reply.error(500, "llama runner process has terminated", style="ollama"))
    [embedding] = embedder.embed_batch(["hello"])
    assert embedding.vector == fake_vector("hello", DIMENSIONS)
    assert len(delays) == 1 and 0.0 <= delays[0] <= 0.5


def test_ollama_gives_up_after_three_attempts(embedder, server, delays):
    server.script(*(Reply.error(503, "busy", style="ollama") for _ in range(3)))
    with pytest.raises(TransientEmbeddingError, match="HTTP 503: busy"):
        embedder.embed_batch(["hello"])
    assert len(server.requests) == 3
    assert len(delays) == 2


def test_ollama_timeout_is_transient(server):
    embedder = OllamaEmbedder(
        base_url=server.ollama_url, dimensions=DIMENSIONS, timeout=0.2, retry=RetryPolicy(attempts=1)
    )
    server.script(Reply.hang(5))
    with pytest.raises(TransientEmbeddingError, match="no response"):
        embedder.embed_batch(["hello"])


def test_ollama_unknown_model_is_permanent_with_the_servers_message(embedder, server, delays):
    server.script(
        Reply.error(
            404,
            'model "mxbai-embed-large" not found, try pulling it first',
            style="ollama",
        )
    )
    with pytest.raises(PermanentEmbeddingError, match="not found, try pulling it first"):
        embedder.embed_batch(["hello"])
    assert delays == []
    assert len(server.requests) == 1


def test_ollama_refuses_vectors_of_the_wrong_dimensions(embedder, server):
    server.script(Reply.wrong_dimensions(1024))
    with pytest.raises(
        PermanentEmbeddingError,
        match="provider returned 1024-dimensional vectors, expected 8",
    ):
        embedder.embed_batch(["hello"])


def test_ollama_refuses_fewer_vectors_than_inputs(embedder, server):
    server.script(Reply(drop_vectors=1))
    with pytest.raises(PermanentEmbeddingError, match="returned 1 vectors for 2 inputs"):
        embedder.embed_batch(["one", "two"])


def test_ollama_flags_texts_over_the_estimated_limit_as_truncated(server):
    embedder = OllamaEmbedder(base_url=server.ollama_url, dimensions=DIMENSIONS, max_input_tokens=10)
    short, long = "a short text", "word " * 40
    embeddings = embedder.embed_batch([short, long])
    assert [e.truncated for e in embeddings] == [False, True]


def test_ollama_defaults_describe_mxbai_embed_large():
    embedder = OllamaEmbedder()
    assert (
        embedder.name,
        embedder.model_id,
        embedder.dimensions,
        embedder.max_input_tokens,
    ) == (
        "ollama",
        "mxbai-embed-large",
        1024,
        510,
    )


def test_ollama_refuses_empty_input_without_a_request(embedder, server):
    with pytest.raises(PermanentEmbeddingError, match="empty input"):
        embedder.embed_batch([""])
    assert server.requests == []
