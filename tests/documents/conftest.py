import pytest

from tests.support.http_servers import FakeEmbeddingServer


@pytest.fixture
def server():
    """A loopback HTTP server speaking the Ollama and OpenAI wire formats."""
    with FakeEmbeddingServer() as running:
        yield running


@pytest.fixture
def delays():
    """The backoff delays a provider chose, recorded instead of slept."""
    return []
