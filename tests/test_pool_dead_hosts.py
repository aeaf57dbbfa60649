"""
Who says a host is dead, on an in-process master with a second host
record: without HA the master's liveness (heartbeats), with HA on the
liveset alone (txxapi.ha.failover), so the etcd member of a host moves
(txxapi.pool.membership) when, and only when, the judge of the moment
counts it dead.
"""

import pytest

from tests.support.inprocess import make_server
from txxapi.ha.failover import Failover
from txxapi.pool.liveness import is_live, set_live
from txxapi.pool.membership import Membership


class _NotPooled:
    """A pool database whose passes do nothing (no etcd here)."""
    pooled = False


@pytest.fixture
def master(tmp_path):
    server, clock = make_server(tmp_path)
    db = server.db
    metrics = db.create("host_metrics", {"live": True})
    other = db.create("host", {"name_label": "other", "metrics": metrics,
                               "address": "127.0.99.5"})
    membership = Membership(_NotPooled(), server)
    server.liveness.on_dead = membership.host_dead
    yield server, other, membership
    server.stop()


def dead_uuids(membership):
    return membership._dead(membership._hosts())


def ha(server, on):
    server.db.update("pool", server.pool_ref, {"ha_enabled": on})


def test_without_ha_the_heartbeats_judge(master):
    server, other, membership = master
    server.liveness.dead_interval = 10.0
    server.liveness.check(now=0.0)
    server.liveness.check(now=11.0)
    uuid = server.db.get("host", other, "uuid")
    assert not is_live(server.db, other)
    assert dead_uuids(membership) == {uuid}
    server.liveness.heard(other)
    assert is_live(server.db, other)
    assert dead_uuids(membership) == set()


def test_with_ha_the_liveset_judges(master, monkeypatch):
    server, other, membership = master
    # Messages are written from threads, which a Clock has not.
    messages = []
    monkeypatch.setattr(server.messages, "create",
                        lambda name, *args: messages.append(name))
    ha(server, True)
    # Silent for long: HA has not declared it dead, its member stays.
    server.liveness.dead_interval = 10.0
    server.liveness.check(now=0.0)
    server.liveness.check(now=11.0)
    assert is_live(server.db, other)
    assert dead_uuids(membership) == set()
    # Declared dead by HA: its member may move.
    Failover(server).declare_dead(other, 12.0)
    assert messages == ["HA_HOST_FAILED"]
    uuid = server.db.get("host", other, "uuid")
    assert dead_uuids(membership) == {uuid}
    # A heartbeat (it lost its lease but still reaches the master over
    # HTTP) does not make it live again; back in the liveset does.
    server.liveness.heard(other)
    assert not is_live(server.db, other)
    assert dead_uuids(membership) == {uuid}
    set_live(server.db, other, True)
    assert dead_uuids(membership) == set()
