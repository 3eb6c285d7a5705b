import pytest
from django.conf import settings
from kombu import Queue

from documents.monitoring import store

TEST_QUEUE = "monitoring-test"


@pytest.fixture
def monitoring_redis(redis_client):
    """The monitoring records start empty (and are left empty)."""

    def clear() -> None:
        for key in redis_client.scan_iter(match=store.key("*")):
            redis_client.delete(key)
        # The queues too: earlier tests without a worker leave messages in
        # them, which would show as depth.
        for queue in (TEST_QUEUE, "ingest", "embed", "maintenance"):
            for key in store.queue_keys(queue):
                redis_client.delete(key)

    clear()
    yield redis_client
    clear()


@pytest.fixture
def test_queue(settings, monitoring_redis):
    """A fourth Mirage queue that no worker of the suite consumes."""
    settings.CELERY_TASK_QUEUES = [*settings.CELERY_TASK_QUEUES, Queue(TEST_QUEUE)]
    return TEST_QUEUE


def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


__all__ = ["TEST_QUEUE", "settings", "staff_client"]
