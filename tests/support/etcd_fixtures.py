"""
pytest fixtures over tests/support/etcd.py for a test module that runs
against one 3-member cluster: ``rt`` (the reactor thread), ``cluster``
(started once per module) and ``client`` (an EtcdClient on every member,
after restarting any member a previous test killed).  A module takes them
with ``from tests.support.etcd_fixtures import rt, cluster, client``, and
may set ``ETCD_CLIENT_TIMEOUT`` (seconds, default 3) for its clients.
"""

import pytest

from tests.support.etcd import EtcdCluster, ReactorThread
from txxapi.pool.etcd import EtcdClient

__all__ = ["rt", "cluster", "client"]


@pytest.fixture(scope="module")
def rt():
    return ReactorThread.get()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = EtcdCluster(tmp_path_factory.mktemp("etcd3"), size=3).start()
    yield c
    c.stop()


@pytest.fixture
def client(request, rt, cluster):
    for m in cluster.members:          # a test may have killed some
        if not m.alive:
            cluster.start_member(m)
    for m in cluster.members:
        cluster.wait_healthy(m)
    timeout = getattr(request.module, "ETCD_CLIENT_TIMEOUT", 3)
    c = rt.call(EtcdClient, cluster.endpoints, timeout=timeout)
    yield c
    rt.call(c.close)
