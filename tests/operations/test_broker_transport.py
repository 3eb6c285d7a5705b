"""The broker transport (mirage/broker.py): one Redis client per channel,
and messages still travel through the real broker."""

import uuid

import pytest
from kombu import Exchange, Queue

from mirage import broker
from mirage.celery import app

pytestmark = pytest.mark.unit


def test_the_app_publishes_through_mirages_transport_with_one_client_per_channel():
    queue = Queue(f"transport-test-{uuid.uuid4().hex}", Exchange("transport-test", type="direct"), "key")
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, broker.Transport)
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        bound = queue(channel)
        bound.declare()
        try:
            producer = connection.Producer(serializer="json")
            for number in range(3):
                producer.publish({"n": number}, exchange=queue.exchange, routing_key="key", declare=[queue])
            received = [bound.get(no_ack=True) for _ in range(3)]
            assert [message.payload["n"] for message in received] == [0, 1, 2]
            assert bound.get(no_ack=True) is None
        finally:
            bound.delete()


def test_a_channel_whose_pool_was_replaced_builds_a_new_client():
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as before:
            pass
        channel._pool = None  # what kombu does when it drops its pools
        with channel.conn_or_acquire() as after:
            assert after is not before
            assert after.connection_pool is channel.pool
            assert after.ping()
