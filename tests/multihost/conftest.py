"""One cluster of five hosts for the module's fault tests, built once and
torn down afterwards, also when a test fails or the run is interrupted
(Ctrl-C ends pytest through its teardown; a run killed outright is swept by
the next one, see network.sweep_abandoned)."""

from __future__ import annotations

import atexit

import pytest

from tests.multihost.cluster import Cluster
from tests.multihost.network import Network, why_not_available


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    network = Network()
    cluster = Cluster(network, tmp_path_factory.mktemp("multihost"))

    def teardown() -> None:
        cluster.stop_all()
        network.teardown()

    atexit.register(teardown)
    try:
        network.build()
        cluster.start()
        yield cluster
    finally:
        teardown()
        atexit.unregister(teardown)


@pytest.fixture
def healthy(cluster):
    """Each test starts on a whole, healed cluster: hosts a previous test
    killed are started again, and every worker answers."""
    for host in ("embed-a", "embed-b"):
        if host not in cluster.processes:
            cluster.start_embed(host)
    cluster.network.clear_faults()
    cluster.set_latency(0)
    cluster.wait_ready()
    return cluster
