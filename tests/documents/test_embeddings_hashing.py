import math

import pytest

from documents.embeddings.base import PermanentEmbeddingError
from documents.embeddings.hashing import HashEmbedder

pytestmark = pytest.mark.unit


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=False))


def embed(text: str) -> list[float]:
    return HashEmbedder().embed_batch([text])[0].vector


def test_hash_embedder_describes_itself():
    embedder = HashEmbedder()
    assert embedder.name == "hash"
    assert embedder.model_id == "hash-384"
    assert embedder.dimensions == 384
    assert embedder.max_input_tokens == 8192


def test_vectors_are_384_dimensional_and_unit_length():
    vector = embed("Invoices are due at the end of the month.")
    assert len(vector) == 384
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)


def test_same_text_gives_same_vector_regardless_of_case():
    assert embed("Quarterly Report") == embed("quarterly report")
    assert embed("quarterly report") == HashEmbedder().embed_batch(["quarterly report"])[0].vector


def test_vectors_do_not_depend_on_the_process():
    # Fixed expected values catch a switch to Python's per-process salted
    # hash(), which would give every worker different vectors.
    vector = embed("mirage")
    assert {index: round(value, 6) for index, value in enumerate(vector) if value} == {
        30: -0.852803,
        91: 0.213201,
        102: 0.213201,
        166: 0.213201,
        179: -0.213201,
        233: 0.213201,
        358: 0.213201,
    }


def test_texts_sharing_words_are_closer_than_unrelated_texts():
    cat = embed("the cat sat on the warm mat")
    cat_again = embed("a cat sat on a mat")
    taxes = embed("quarterly tax filing deadlines approach")
    assert cosine(cat, cat_again) > cosine(cat, taxes) + 0.3


def test_inflected_words_share_trigrams():
    assert cosine(embed("embedding"), embed("embeddings")) > cosine(embed("embedding"), embed("invoice"))


def test_unicode_words_are_tokenised():
    embedder = HashEmbedder()
    assert embedder.count_tokens("Über straße café 東京") == 4
    assert cosine(embed("Straße in Köln"), embed("straße")) > cosine(embed("Straße in Köln"), embed("tax"))


def test_count_tokens_counts_words():
    assert HashEmbedder().count_tokens("It's 3 o'clock, isn't it?") == 8


def test_long_text_is_never_truncated():
    text = "word " * 10_000
    [embedding] = HashEmbedder().embed_batch([text])
    assert embedding.truncated is False


def test_punctuation_only_text_still_gets_a_vector():
    [embedding] = HashEmbedder().embed_batch(["-> <-"])
    assert math.isclose(sum(v * v for v in embedding.vector), 1.0)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_input_is_refused_permanently(text):
    with pytest.raises(PermanentEmbeddingError, match="^empty input$"):
        HashEmbedder().embed_batch([text])


def test_empty_input_in_a_batch_names_its_position():
    with pytest.raises(PermanentEmbeddingError, match="empty input at index 1 of 2"):
        HashEmbedder().embed_batch(["fine", " "])


def test_empty_batch_gives_no_vectors():
    assert HashEmbedder().embed_batch([]) == []
