"""A service behind the API that does not answer is a 503 with a message
and Retry-After, never a 500."""

import kombu.exceptions
import pytest
import redis
from django.db import OperationalError

from common.api import exception_handler

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("exc", "service"),
    [
        (
            kombu.exceptions.OperationalError("Error 110 connecting to 10.0.0.1:6379. Connection timed out."),
            "The task broker (Redis)",
        ),
        (redis.ConnectionError("Connection refused"), "The task broker (Redis)"),
        (OperationalError("connection to server failed"), "The database"),
    ],
)
def test_an_unreachable_service_is_a_503_that_says_which(exc, service):
    response = exception_handler(exc, {})
    assert response.status_code == 503
    assert response.data["detail"].startswith(f"{service} does not answer")
    assert response["Retry-After"] == "5"


def test_anything_else_unexpected_stays_a_500_that_leaks_nothing():
    response = exception_handler(RuntimeError("secret internals"), {})
    assert response.status_code == 500
    assert "secret" not in response.data["detail"]
