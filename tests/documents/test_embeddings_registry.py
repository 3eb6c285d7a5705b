import pytest

from documents.embeddings import clear_embedder_cache, get_embedder, registry
from documents.embeddings.hashing import HashEmbedder
from documents.embeddings.local import LocalEmbedder
from documents.embeddings.ollama import OllamaEmbedder
from documents.embeddings.openai import OpenAIEmbedder
from documents.embeddings.ratelimit import RequestBudget

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_embedder_cache()
    yield
    clear_embedder_cache()


def test_named_specs_build_their_providers():
    assert isinstance(get_embedder("hash"), HashEmbedder)
    assert isinstance(get_embedder("local"), LocalEmbedder)
    assert isinstance(get_embedder("ollama"), OllamaEmbedder)
    assert isinstance(get_embedder("openai"), OpenAIEmbedder)


def test_building_the_local_embedder_does_not_load_the_model():
    assert get_embedder("local")._model is None


def test_spec_defaults_to_the_mirage_embedder_setting(settings):
    settings.MIRAGE_EMBEDDER = "hash"
    assert isinstance(get_embedder(), HashEmbedder)


def test_instances_are_cached_per_spec():
    assert get_embedder("hash") is get_embedder("hash")
    assert get_embedder("hash") is not get_embedder("documents.embeddings.hashing.HashEmbedder")


def test_a_forked_process_builds_its_own_instances(monkeypatch):
    parent = get_embedder("hash")
    monkeypatch.setattr(registry.os, "getpid", lambda: -1)
    assert get_embedder("hash") is not parent


def test_dotted_path_builds_that_class():
    embedder = get_embedder("documents.embeddings.hashing.HashEmbedder")
    assert isinstance(embedder, HashEmbedder)


@pytest.mark.parametrize("spec", ["nonsense", "documents.embeddings.hashing.Missing", "no.such.Module"])
def test_unknown_specs_are_refused(spec):
    with pytest.raises(ValueError, match=spec.split(".")[-1]):
        get_embedder(spec)


def test_ollama_is_configured_from_settings(settings):
    settings.MIRAGE_OLLAMA_URL = "http://ollama.internal:11434/"
    settings.MIRAGE_OLLAMA_MODEL = "mxbai-embed-large"
    settings.MIRAGE_EMBED_TIMEOUT_SECONDS = 12.5
    settings.MIRAGE_EMBED_REQUESTS_PER_MINUTE = 0
    embedder = get_embedder("ollama")
    assert embedder.url == "http://ollama.internal:11434/api/embed"
    assert (embedder.model_id, embedder.dimensions, embedder.max_input_tokens) == (
        "mxbai-embed-large",
        1024,
        510,
    )
    assert embedder._http.timeout == 12.5
    assert embedder._http._budget is None


def test_openai_is_configured_from_settings(settings):
    settings.MIRAGE_OPENAI_BASE_URL = "https://api.openai.com/v1"
    settings.MIRAGE_OPENAI_API_KEY = "sk-from-settings"
    settings.MIRAGE_OPENAI_MODEL = "text-embedding-3-large"
    settings.MIRAGE_OPENAI_DIMENSIONS = 256
    embedder = get_embedder("openai")
    assert embedder.url == "https://api.openai.com/v1/embeddings"
    assert (embedder.model_id, embedder.dimensions) == ("text-embedding-3-large", 256)
    assert embedder._http._headers == {"Authorization": "Bearer sk-from-settings"}


def test_a_request_budget_is_shared_when_requests_per_minute_is_set(settings):
    settings.MIRAGE_EMBED_REQUESTS_PER_MINUTE = 500
    budget = get_embedder("openai")._http._budget
    assert isinstance(budget, RequestBudget)
    assert budget.requests_per_minute == 500
    assert budget.key == settings.MIRAGE_REDIS_PREFIX + "embeddings:requests:openai:" + settings.MIRAGE_OPENAI_MODEL
