"""Celery's Redis transport (kombu), with one Redis client per channel.

kombu's Redis channel builds a new `redis.Redis` object around its
connection pool for every command it sends outside the consumer's loop:
every task it publishes and every task event (sent, received, started,
succeeded). Building one costs more CPU than the LPUSH it is built for
(about 125 us against about 110 us on the benchmark machine), five times
per embedded chunk. A channel here keeps the client it built and hands it
out again while its pool is the same: the client holds no state of its own
beyond the pool (redis-py clients are safe to share between threads), so
nothing else changes. Used through CELERY_BROKER_TRANSPORT.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    def _create_client(self, asynchronous: bool = False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
