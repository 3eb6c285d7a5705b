import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support.factories import make_project, make_user


@pytest.fixture
def user(db):
    return make_user()


@pytest.fixture
def other_user(db):
    return make_user()


@pytest.fixture
def staff(db):
    return make_user(staff=True)


def client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user):
    return client_for(user)


@pytest.fixture
def other_api(other_user):
    return client_for(other_user)


@pytest.fixture
def staff_api(staff):
    return client_for(staff)


@pytest.fixture
def project(user):
    return make_project(members=[user])
