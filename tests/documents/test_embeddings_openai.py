import pytest
import tiktoken

from documents.embeddings import openai as openai_module
from documents.embeddings.base import (
    PermanentEmbeddingError,
    TransientEmbeddingError,
    estimate_tokens,
)
from documents.embeddings.http import RetryPolicy
from documents.embeddings.openai import OpenAIEmbedder
from tests.support.http_servers import FAKE_DIMENSIONS, Reply, fake_vector

pytestmark = pytest.mark.unit

DIMENSIONS = FAKE_DIMENSIONS


def byte_encoding() -> tiktoken.Encoding:
    """A tiktoken encoding with one token per byte: exact and offline, so the
    tiktoken code path runs without OpenAI's BPE tables."""
    return tiktoken.Encoding(
        name="bytes",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([value]): value for value in range(256)},
        special_tokens={},
    )


@pytest.fixture
def embedder(server, delays):
    return OpenAIEmbedder(
        base_url=server.openai_base_url,
        api_key="sk-test",
        model="text-embedding-3-small",
        dimensions=DIMENSIONS,
        timeout=0.5,
        retry=RetryPolicy(sleep=delays.append),
        encoding=None,
    )


def test_openai_embeds_a_batch_reordered_by_index(embedder, server):
    texts = ["first chunk", "second chunk", "third chunk"]
    embeddings = embedder.embed_batch(texts)
    # The fake server lists items in reverse index order.
    assert [e.vector for e in embeddings] == [fake_vector(t, DIMENSIONS) for t in texts]
    [request] = server.requests
    assert request.path == "/v1/embeddings"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json == {
        "model": "text-embedding-3-small",
        "input": texts,
        "encoding_format": "float",
        "dimensions": DIMENSIONS,
    }


def test_openai_sends_no_dimensions_to_models_that_cannot_shorten(server):
    embedder = OpenAIEmbedder(
        base_url=server.openai_base_url,
        model="nomic-embed-text",
        dimensions=DIMENSIONS,
        encoding=None,
    )
    embedder.embed_batch(["hello"])
    assert "dimensions" not in server.requests[0].json


def test_openai_sends_no_authorization_without_a_key(server):
    embedder = OpenAIEmbedder(base_url=server.openai_base_url, dimensions=DIMENSIONS, encoding=None)
    embedder.embed_batch(["hello"])
    assert "authorization" not in server.requests[0].headers


def test_openai_splits_requests_by_input_count(server):
    embedder = OpenAIEmbedder(
        base_url=server.openai_base_url,
        dimensions=DIMENSIONS,
        max_batch_size=2,
        encoding=None,
    )
    texts = [f"text {n}" for n in range(5)]
    embeddings = embedder.embed_batch(texts)
    assert [e.vector for e in embeddings] == [fake_vector(t, DIMENSIONS) for t in texts]
    assert [len(r.json["input"]) for r in server.requests] == [2, 2, 1]


def test_openai_waits_out_a_429_for_the_retry_after(embedder, server, delays):
    server.script(Reply.rate_limited(retry_after="1.5"))
    [embedding] = embedder.embed_batch(["hello"])
    assert embedding.vector == fake_vector("hello", DIMENSIONS)
    assert delays == [1.5]


def test_openai_hands_a_long_retry_after_back_to_the_caller(embedder, server, delays):
    server.script(Reply.rate_limited(retry_after="120"))
    with pytest.raises(TransientEmbeddingError) as raised:
        embedder.embed_batch(["hello"])
    assert raised.value.retry_after == 120
    assert delays == []


def test_openai_retries_a_500_then_succeeds(embedder, server, delays):
    server.script(Reply.error(500, "The server had an error while processing your request."))
    [embedding] = embedder.embed_batch(["hello"])
    assert embedding.vector == fake_vector("hello", DIMENSIONS)
    assert len(delays) == 1


def test_openai_timeout_is_transient(server):
    embedder = OpenAIEmbedder(
        base_url=server.openai_base_url,
        dimensions=DIMENSIONS,
        timeout=0.2,
        retry=RetryPolicy(attempts=1),
        encoding=None,
    )
    server.script(Reply.hang(5))
    with pytest.raises(TransientEmbeddingError, match="no response"):
        embedder.embed_batch(["hello"])


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "This model's maximum context length is 8192 tokens"),
        (401, "Incorrect API key provided: sk-test."),
        (404, "The model `text-embedding-4` does not exist"),
    ],
)
def test_openai_client_errors_are_permanent_with_the_apis_message(embedder, server, delays, status, message):
    server.script(Reply.error(status, message))
    with pytest.raises(PermanentEmbeddingError) as raised:
        embedder.embed_batch(["hello"])
    assert str(raised.value) == f"openai: HTTP {status}: {message}"
    assert delays == []


def test_openai_refuses_vectors_of_the_wrong_dimensions(embedder, server):
    server.script(Reply.wrong_dimensions(1536))
    with pytest.raises(
        PermanentEmbeddingError,
        match="provider returned 1536-dimensional vectors, expected 8",
    ):
        embedder.embed_batch(["hello"])


def test_openai_refuses_fewer_vectors_than_inputs(embedder, server):
    server.script(Reply(drop_vectors=1))
    with pytest.raises(PermanentEmbeddingError, match="returned 1 vectors for 2 inputs"):
        embedder.embed_batch(["one", "two"])


def test_openai_refuses_duplicate_indices(embedder, server):
    server.script(
        Reply(
            body={
                "data": [
                    {"index": 0, "embedding": [0.0] * 8},
                    {"index": 0, "embedding": [0.0] * 8},
                ]
            }
        )
    )
    with pytest.raises(PermanentEmbeddingError, match="indices"):
        embedder.embed_batch(["one", "two"])


def test_openai_defaults_describe_text_embedding_3_small():
    embedder = OpenAIEmbedder(encoding=None)
    assert (
        embedder.name,
        embedder.model_id,
        embedder.dimensions,
        embedder.max_input_tokens,
    ) == (
        "openai",
        "text-embedding-3-small",
        1536,
        8191,
    )
    assert OpenAIEmbedder(model="text-embedding-3-large", encoding=None).dimensions == 3072


def test_openai_needs_dimensions_for_an_unknown_model():
    with pytest.raises(ValueError, match="dimensions"):
        OpenAIEmbedder(model="some-compatible-model", encoding=None)


def test_openai_counts_tokens_with_tiktoken_when_given(server):
    embedder = OpenAIEmbedder(base_url=server.openai_base_url, dimensions=DIMENSIONS, encoding=byte_encoding())
    assert embedder.count_tokens("héllo") == 6
    assert embedder.tokenizer == "tiktoken:bytes"


def test_openai_cuts_an_over_long_text_to_the_exact_token_limit(server):
    embedder = OpenAIEmbedder(
        base_url=server.openai_base_url,
        dimensions=DIMENSIONS,
        max_input_tokens=10,
        encoding=byte_encoding(),
    )
    embeddings = embedder.embed_batch(["short", "0123456789abcdef"])
    assert [e.truncated for e in embeddings] == [False, True]
    assert server.requests[0].json["input"] == ["short", "0123456789"]


def test_openai_cut_never_splits_a_character_into_more_tokens(server):
    embedder = OpenAIEmbedder(
        base_url=server.openai_base_url,
        dimensions=DIMENSIONS,
        max_input_tokens=5,
        encoding=byte_encoding(),
    )
    # "é" is two bytes; a cut after its first byte would decode to U+FFFD,
    # which re-encodes to three bytes and overflows the limit.
    embedder.embed_batch(["abcdé"])
    assert server.requests[0].json["input"] == ["abcd"]


def test_openai_cuts_an_over_long_text_to_the_estimate_without_tiktoken(embedder, server):
    embedder.max_input_tokens = 10
    [embedding] = embedder.embed_batch(["word " * 40])
    assert embedding.truncated is True
    assert estimate_tokens(server.requests[0].json["input"][0]) <= 10


def test_openai_falls_back_to_the_estimate_when_tiktoken_cannot_load(monkeypatch):
    def unavailable(name):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tiktoken, "get_encoding", unavailable)
    monkeypatch.setattr(openai_module, "_encodings", {})
    embedder = OpenAIEmbedder()
    text = "The quick brown fox jumps over the lazy dog."
    assert embedder.count_tokens(text) == estimate_tokens(text)
    assert embedder.tokenizer == "estimate"
